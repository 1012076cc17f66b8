"""Search over attention variants: templates with slots, their fillings enumerated and
deduplicated by canonical form, each variant trained and ranked (docs/search.md).

- `SearchSpace` (space.py): a template and its fillers; `enumerate()` gives every filling,
  type-checked, grouped into canonical classes.
- `instantiate` (template.py): a template with its slot boxes filled.
- `run_search` (runner.py): train the variants on a task (tasks.py: MQAR, byte-level
  language modelling), durably (store.py: SQLite), on local processes or Ray
  (executors.py); leaderboard.py and plots.py write the results.
"""

from .space import Enumeration, Filling, SearchSpace, VariantClass
from .template import fill, instantiate, slots_of, with_anatomy

__all__ = ["Enumeration", "Filling", "SearchSpace", "VariantClass", "fill", "instantiate",
           "slots_of", "with_anatomy"]
