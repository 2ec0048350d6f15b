"""The llmctl test suite; a package so that conftest can import the service harness."""
