"""Video search: segment embeddings, a FAISS + SQLite index, temporal alignment, dedupe, retrieval metrics."""

from vidtune.index.embed import EmbedConfig, Embedder, VideoEmbedding
from vidtune.index.search import Searcher, add_to_index, build_index, index_info, remove_from_index, search

__all__ = ["EmbedConfig", "Embedder", "VideoEmbedding", "Searcher", "build_index", "add_to_index",
           "remove_from_index", "index_info", "search"]
