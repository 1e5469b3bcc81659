"""Similarity search over a survey: embed it into Parquet shards, index them with faiss, query
the index by image, galaxy id, text, Galaxy Zoo answers (a feature query: composed symbols, their
caption in volunteer wording, or both) or a sketch. Hits carry each galaxy's answers when the
catalog has them.

    from galaxalign.search import embed_survey, build_index_from_embeddings, SearchIndex, query_text
"""
from galaxalign.search.embed import embed_survey, read_embeddings, read_manifest, write_embedding_shards
from galaxalign.search.filters import CatalogFilter, FilterError, parse_filter
from galaxalign.search.build import build_index, build_index_from_embeddings, choose_kind
from galaxalign.search.index import Hit, IndexMismatchError, SearchIndex
from galaxalign.search.query import (
    FEATURE_VIAS,
    QueryError,
    feature_caption,
    feature_text,
    feature_vector,
    load_image,
    parse_answers,
    query_features,
    query_id,
    query_image,
    query_sketch,
    query_symbol,
    query_text,
    query_vector,
    render_query_symbol,
)

__all__ = [
    "CatalogFilter", "FilterError", "parse_filter", "query_vector",
    "FEATURE_VIAS", "feature_caption", "feature_text", "feature_vector", "query_features",
    "Hit", "IndexMismatchError", "QueryError", "SearchIndex", "build_index", "build_index_from_embeddings",
    "choose_kind", "embed_survey", "load_image", "parse_answers", "query_id", "query_image", "query_sketch",
    "query_symbol", "query_text", "read_embeddings", "read_manifest", "render_query_symbol",
    "write_embedding_shards",
]
