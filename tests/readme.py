"""README.md's command blocks, for the tests that run them as written.

Blocks are fenced: ```sh (shell commands, run line by line with bash -e),
```python (a program), ```text (not commands: a listing). A block without a
language counts as shell. Every block knows the section (## or ###) it is in.
"""

import os
import re

from ferrytest import SOURCE_DIR

README = os.path.join(SOURCE_DIR, "README.md")


class Block:
    def __init__(self, section, subsection, lang, text, line):
        self.section, self.subsection, self.lang = section, subsection, lang
        self.text, self.line = text, line

    def __repr__(self):
        return "README.md:%d (%s / %s, %s)" % (self.line, self.section, self.subsection, self.lang)


def blocks(path=README):
    out = []
    section = subsection = ""
    fence = None
    with open(path, encoding="utf-8") as f:
        for n, line in enumerate(f, 1):
            if fence is not None:
                if line.rstrip() == "```":
                    out.append(Block(section, subsection, fence[0] or "sh", "".join(fence[2]),
                                     fence[1]))
                    fence = None
                else:
                    fence[2].append(line)
                continue
            m = re.match(r"^```(\w*)\s*$", line)
            if m:
                fence = (m.group(1), n, [])
            elif line.startswith("## "):
                section, subsection = line[3:].strip(), ""
            elif line.startswith("### "):
                subsection = line[4:].strip()
    if fence is not None:
        raise ValueError("README.md:%d: unclosed code block" % fence[1])
    return out


def install_blocks():
    """The shell blocks of "## Install" (run by test_install.py as root in overlay mounts)."""
    return [b for b in blocks() if b.section == "Install" and b.lang == "sh"]
