"""Repositories, HTTP, the content-addressed cache and the `index`/`fetch` stages."""

from builder.repo.cache import Cache, default_cache_dir
from builder.repo.fetch import (
    Fetcher,
    FetchStats,
    fetch_packages,
    fetch_packages_parallel,
    verify_package_file,
)
from builder.repo.indexes import load_indexes
from builder.repo.repository import Repository, parse_repositories, parse_repository

__all__ = [
    "Cache",
    "FetchStats",
    "Fetcher",
    "Repository",
    "default_cache_dir",
    "fetch_packages",
    "fetch_packages_parallel",
    "load_indexes",
    "parse_repositories",
    "parse_repository",
    "verify_package_file",
]
