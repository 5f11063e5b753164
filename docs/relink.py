"""Keep the docs' links into the code pointing at the right lines.

A link whose text names a function or class, such as [`elbo`](../vae_zoo/objectives.py#L58) or
[`Pass.kl`](../vae_zoo/model.py#L56), is rewritten to the line that defines it now. Run it after
moving code: `python docs/relink.py` (tests/test_docs.py fails until the links are right).
"""

from __future__ import annotations

import ast
import re
import sys
from pathlib import Path

DOCS = Path(__file__).resolve().parent
LINK = re.compile(r"\[`(?P<symbol>[A-Za-z_][\w.]*)`\]\((?P<path>\.\./[\w/]+\.py)#L(?P<line>\d+)\)")


def definitions(source: str) -> dict[str, int]:
    """Line of every function and class, by name and by dotted name (`Pass.kl`)."""
    found: dict[str, int] = {}

    def visit(node: ast.AST, prefix: str) -> None:
        for child in ast.iter_child_nodes(node):
            if isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
                line = min([child.lineno, *(d.lineno for d in child.decorator_list)])
                found.setdefault(child.name, line)
                found[prefix + child.name] = line
                visit(child, f"{prefix}{child.name}.")
            elif isinstance(child, (ast.Assign, ast.AnnAssign)) and not prefix:
                targets = child.targets if isinstance(child, ast.Assign) else [child.target]
                for target in targets:
                    if isinstance(target, ast.Name):
                        found.setdefault(target.id, child.lineno)

    visit(ast.parse(source), "")
    return found


def relink(text: str, base: Path) -> tuple[str, list[str]]:
    """`text` with every symbol link's line updated, and the links that name nothing."""
    problems: list[str] = []
    cache: dict[Path, dict[str, int]] = {}

    def replace(match: re.Match) -> str:
        path = (base / match["path"]).resolve()
        if not path.is_file():
            problems.append(f"{match[0]}: no file {path}")
            return match[0]
        if path not in cache:
            cache[path] = definitions(path.read_text())
        line = cache[path].get(match["symbol"])
        if line is None:
            problems.append(f"{match[0]}: no definition of {match['symbol']} in {path.name}")
            return match[0]
        return f"[`{match['symbol']}`]({match['path']}#L{line})"

    return LINK.sub(replace, text), problems


def main() -> int:
    status = 0
    for page in sorted(DOCS.glob("*.md")):
        text = page.read_text()
        updated, problems = relink(text, page.parent)
        for problem in problems:
            print(f"{page.name}: {problem}", file=sys.stderr)
            status = 1
        if updated != text:
            page.write_text(updated)
            print(f"updated {page.name}")
    return status


if __name__ == "__main__":
    sys.exit(main())
