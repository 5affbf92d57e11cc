"""Segment-Anything domain: a COCO-format adapter (``domain``), the model builder over the
``segment-anything`` classes (``modeling``), synthetic COCO datasets (``synthetic``), the ``sam``
world builder (``world``) and the pairwise CycleQD experiment behind Table 4 (``table4``)."""

from domains.sam import world  # noqa: F401,E402 - registers the "sam" model-world builder
from domains.sam.domain import SAMDomain  # noqa: F401 - registers the "sam" domain
