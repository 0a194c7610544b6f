"""Entropy coding: exact range coding from integer tables (``range_coder``), learned densities
(``entropy_models``), reverse channel coding (``pfr`` over the format's ``candidates``).
The file format is :mod:`ldcodec.codecs.container`.

Importing the package runs the known-answer check of the range coder once
(:func:`~ldcodec.coding.coder_check.check_coder`): a constriction that codes differently fails here.
"""

from ldcodec.coding.coder_check import check_coder

check_coder()
