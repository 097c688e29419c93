"""bitseek: learned binary codes for video and image retrieval.

Layers, in the one direction data flows: ``data`` (sources and datasets) -> ``models`` (encode)
-> ``codes`` (packed bits + ids) -> ``index`` (search) -> ``rerank`` -> ``eval`` -> report.
"""

__version__ = "0.1.0"
