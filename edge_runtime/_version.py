"""The package version (a leaf: modules that report it need not import the package's facade)."""
__version__ = "0.1.0"
