"""Install the shipped cluster profile where Snakemake looks for ``--profile NAME``.

Snakemake resolves ``--profile slurm`` as ``./slurm`` or ``<user config dir>/snakemake/slurm``
(``~/.config/snakemake/slurm`` on Linux), not ``./profiles/slurm``. Copying ``profiles/slurm`` there
with the site's account and partition filled in makes ``snakemake --cores all --profile slurm``
work from the repository root, as the README says.
"""

from __future__ import annotations

import re
from pathlib import Path

from clgrid.io import atomic_path

PROFILE_FILE = "config.v8+.yaml"
PLACEHOLDERS = {"account": "<ACCOUNT>", "partition": "<PARTITION>"}


class ProfileError(ValueError):
    """A profile that cannot be installed as asked; the message says what to do."""


def shipped_profiles(repo: str | Path = ".") -> Path:
    """The repository's profiles/ folder: from the working directory, else next to this package's source."""
    for root in (Path(repo), Path(__file__).resolve().parents[2]):
        if (root / "profiles").is_dir():
            return root / "profiles"
    raise ProfileError("no profiles/ folder found: run this from the clgrid repository root")


def user_profile_dir(name: str) -> Path:
    """Where Snakemake finds ``--profile NAME`` for this user (its own lookup: platformdirs' config dir)."""
    from platformdirs import AppDirs

    return Path(AppDirs("snakemake", "snakemake").user_config_dir) / name


def render(template: str, account: str | None, partition: str | None, extra: dict[str, str] | None = None) -> str:
    """The profile text with placeholders filled in; a line whose placeholder has no value is dropped."""
    values = {"account": account, "partition": partition}
    lines = []
    for line in template.splitlines():
        key = next((k for k, token in PLACEHOLDERS.items() if token in line), None)
        if key is None:
            lines.append(line)
        elif values[key]:
            lines.append(line.replace(PLACEHOLDERS[key], values[key]))
    text = "\n".join(lines) + "\n"
    for option, value in (extra or {}).items():
        pattern = re.compile(rf"^{re.escape(option)}:.*$", re.MULTILINE)
        if pattern.search(text):
            text = pattern.sub(f"{option}: {value}", text)
        else:
            text += f"{option}: {value}\n"
    return text


def install_profile(name: str = "slurm", account: str | None = None, partition: str | None = None,
                    dest: str | Path | None = None, force: bool = False, repo: str | Path = ".",
                    extra: dict[str, str] | None = None) -> Path:
    """Write profiles/<name> (rendered) to ``dest`` (default: the user's Snakemake profile folder); return the file.

    An existing, different profile is kept unless ``force``: it may hold a site's settings that took work to find.
    """
    source = shipped_profiles(repo) / name / PROFILE_FILE
    if not source.is_file():
        available = sorted(p.name for p in shipped_profiles(repo).iterdir() if (p / PROFILE_FILE).is_file())
        raise ProfileError(f"no shipped profile {name!r}; available: {', '.join(available)}")
    for key, value in (("account", account), ("partition", partition)):
        if value is not None and not re.fullmatch(r"[A-Za-z0-9_.-]+", value):
            raise ProfileError(f"--{key} {value!r}: a SLURM {key} name is letters, digits, '_', '.' and '-'")
    text = render(source.read_text(), account, partition, extra)
    target = (Path(dest) if dest else user_profile_dir(name)) / PROFILE_FILE
    if target.exists() and target.read_text() != text and not force:
        raise ProfileError(f"{target} exists and differs from what would be written; pass --force to replace it")
    target.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(target) as tmp:
        tmp.write_text(text)
    return target
