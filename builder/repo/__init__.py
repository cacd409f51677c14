"""Repositories, HTTP, the content-addressed cache, index loading, package fetching and
verification."""
