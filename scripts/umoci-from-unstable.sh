#!/usr/bin/env bash
# umoci >= 0.5 (zstd layers) into DEST/bin, from Debian unstable's archive: Debian 12 ships
# umoci 0.4.7, which cannot unpack tar+zstd layers. apt fetches and verifies it (the archive's
# signed InRelease, the package's hash) with a private state directory, so the machine's apt
# configuration is left as it is; only the umoci binary is extracted.
set -euo pipefail
dest=${1:?usage: umoci-from-unstable.sh DEST}
if "$dest/bin/umoci" --version 2>/dev/null | grep -qE 'version 0\.([5-9]|[1-9][0-9])|version [1-9]'; then
    exit 0
fi
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
mkdir -p "$work/lists/partial" "$work/cache" "$work/archives/partial" "$dest/bin"
echo "deb http://deb.debian.org/debian unstable main" >"$work/sources.list"
apt_opts=(-o "Dir::Etc::SourceList=$work/sources.list" -o "Dir::Etc::SourceParts=-"
          -o "Dir::State::Lists=$work/lists" -o "Dir::Cache=$work/cache"
          -o "Dir::Cache::Archives=$work/archives" -o "Acquire::Languages=none"
          -o "APT::Sandbox::User=$(id -un)" -qq)
apt-get "${apt_opts[@]}" update
(cd "$work" && apt-get "${apt_opts[@]}" download umoci)
dpkg-deb -x "$work"/umoci_*.deb "$work/x"
install -m 0755 "$work/x/usr/bin/umoci" "$dest/bin/umoci"
"$dest/bin/umoci" --version | head -1
