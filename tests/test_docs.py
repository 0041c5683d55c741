"""The README stays a short front door, and every relative link in it and in docs/ leads somewhere.

A link is markdown's `[text](target)` or an image's `![alt](target)`. Links to the web (http, https)
and mail, and pure `#anchors` within a page, are not checked; a file link's `#fragment` is dropped
before the file is looked for.
"""

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
README_MAX_LINES = 220
# `[text](target)` and `![alt](target)`; the target ends at the first space or closing parenthesis
LINK = re.compile(r"!?\[[^\]]*\]\(\s*<?([^)\s>]+)>?(?:\s+\"[^\"]*\")?\s*\)")
CODE_BLOCK = re.compile(r"^```.*?^```", re.DOTALL | re.MULTILINE)
INLINE_CODE = re.compile(r"`[^`\n]*`")


def pages() -> list[Path]:
    return [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]


def link_targets(text: str) -> list[str]:
    """Every link target in a markdown text, outside code blocks and inline code."""
    text = INLINE_CODE.sub("", CODE_BLOCK.sub("", text))
    return LINK.findall(text)


def is_checked(target: str) -> bool:
    return not (target.startswith(("http://", "https://", "mailto:", "#")))


def broken_links(page: Path) -> list[str]:
    broken = []
    for target in link_targets(page.read_text()):
        if not is_checked(target):
            continue
        path = target.split("#", 1)[0]
        if not (page.parent / path).exists():
            broken.append(target)
    return broken


def test_the_link_finder_sees_links_and_images_but_not_code():
    text = (
        'See [the CLI](docs/cli.md#flags) and ![shot](docs/a.png "title").\n'
        "`[not](a-link.md)` and [web](https://example.com) and [here](#top)\n"
        "```python\nx = [a](b.md)\n```\n"
    )
    targets = link_targets(text)
    assert targets == ["docs/cli.md#flags", "docs/a.png", "https://example.com", "#top"]
    assert [t for t in targets if is_checked(t)] == ["docs/cli.md#flags", "docs/a.png"]


def test_every_page_has_links_to_check():
    """Guards the test itself: a link pattern that matched nothing would pass every page."""
    for page in pages():
        assert any(is_checked(t) for t in link_targets(page.read_text())), f"{page.name}: no relative links found"


def test_every_relative_link_resolves():
    problems = [f"{page.relative_to(ROOT)}: {target}" for page in pages() for target in broken_links(page)]
    assert not problems, "links to files or folders that do not exist:\n" + "\n".join(problems)


def test_the_readme_is_a_front_door():
    lines = (ROOT / "README.md").read_text().splitlines()
    assert len(lines) <= README_MAX_LINES, (
        f"README.md has {len(lines)} lines, more than {README_MAX_LINES}: move the depth into docs/"
    )


def test_the_readme_links_every_docs_page():
    readme = (ROOT / "README.md").read_text()
    unlinked = [p.name for p in sorted((ROOT / "docs").glob("*.md")) if f"(docs/{p.name})" not in readme]
    assert not unlinked, f"docs pages the README does not link: {unlinked}"
