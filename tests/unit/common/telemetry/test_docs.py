"""docs/metrics.md is the generated list of what each daemon emits, and the README points at it."""

from pathlib import Path

from spire_py.common.telemetry import names

ROOT = Path(__file__).resolve().parents[4]


def test_metrics_doc_is_generated_from_names():
    assert (ROOT / "docs" / "metrics.md").read_text() == names.markdown(), (
        "regenerate: python -m spire_py.common.telemetry.names > docs/metrics.md")


def test_every_key_constant_is_documented():
    documented = {key for _, _, key, _, _ in names.METRICS}
    constants = {v for k, v in vars(names).items() if k.isupper() and isinstance(v, tuple)
                 and v and all(isinstance(p, str) for p in v)}
    assert constants - documented == set()


def test_readme_links_the_metrics_list():
    assert "docs/metrics.md" in (ROOT / "README.md").read_text()
