"""The zoo: .anat files of known attention anatomies, shipped as package data.

Each file starts with a comment naming the paper it follows; `anatomy.zoo()` loads them all.
"""
