"""dermretr: composed vision-language retrieval of skin-lesion cases.

A reference lesion image plus descriptor text ("atypical pigment network,
blue-whitish veil") retrieves the most relevant biopsy-confirmed cases.

Subpackages
-----------
data
    The case table schema, the 7-point vocabulary, DermSynth synthetic
    dermoscopy, dataset loaders and leak-free splits.
viz
    Figures (matplotlib), e.g. :func:`dermretr.viz.contact_sheet`.
"""

from ._errors import DermretrError

__version__ = "0.1.0"
__all__ = ["DermretrError", "__version__"]
