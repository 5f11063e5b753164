"""The docs' links into the code point at what they name (`python docs/relink.py` fixes them)."""

import importlib.util
import re
from pathlib import Path

DOCS = Path(__file__).resolve().parents[1] / "docs"
ANY_CODE_LINK = re.compile(r"\]\((\.\./[\w/]+\.py)#L(\d+)")


def relinker():
    spec = importlib.util.spec_from_file_location("relink", DOCS / "relink.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_every_symbol_link_points_at_its_definition():
    module = relinker()
    for page in DOCS.glob("*.md"):
        text = page.read_text()
        updated, problems = module.relink(text, page.parent)
        assert not problems, problems
        stale = [old for old, new in zip(module.LINK.findall(text), module.LINK.findall(updated))
                 if old != new]
        assert not stale, f"{page.name}: run `python docs/relink.py`; stale links: {stale}"


def test_every_code_link_names_a_symbol_and_an_existing_line():
    module = relinker()
    for page in DOCS.glob("*.md"):
        text = page.read_text()
        for target, line in ANY_CODE_LINK.findall(text):
            lines = (page.parent / target).read_text().splitlines()
            assert 1 <= int(line) <= len(lines), f"{page.name}: {target}#L{line}"
        assert len(ANY_CODE_LINK.findall(text)) == len(module.LINK.findall(text)), (
            f"{page.name}: a link into the code must name what it points at, e.g. "
            "[`Pass.kl`](../vae_zoo/model.py#L56), so that docs/relink.py can keep it right")
