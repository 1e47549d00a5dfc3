"""Run the README's Quickstart against the installed jaxinit, not the source tree.

Usage: python .ci/quickstart.py README.md  (from a folder outside the repository)

Executes the ```python blocks under the README's ``## Quickstart`` heading, in order, in one
namespace, after checking that ``import jaxinit`` resolves to an installed copy.
"""

import pathlib
import re
import sys

readme = pathlib.Path(sys.argv[1]).resolve()
text = readme.read_text()
match = re.search(r"^## Quickstart\n(.*?)(?=^## |\Z)", text, flags=re.S | re.M)
if match is None:
    sys.exit(f"{readme}: no '## Quickstart' section")
blocks = re.findall(r"```python\n(.*?)```", match.group(1), flags=re.S)
if not blocks:
    sys.exit(f"{readme}: the Quickstart has no python blocks")

import jaxinit  # noqa: E402

where = pathlib.Path(jaxinit.__file__).resolve()
if readme.parent in where.parents:
    sys.exit(f"jaxinit was imported from the source tree ({where}), not from the installed wheel")
print(f"jaxinit {jaxinit.__version__} from {where.parent}")
namespace: dict = {}
for i, block in enumerate(blocks):
    exec(compile(block, f"Quickstart block {i}", "exec"), namespace)
print(f"Quickstart: {len(blocks)} python block(s) ran")
