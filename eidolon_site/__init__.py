# The release, as pyproject.toml's [project] version says (tests/analyses/test_exports.py checks
# that they agree): exports name the tool that wrote them with it.
__version__ = "0.1.0"
