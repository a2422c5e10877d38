#!/bin/bash
# make deb: builds vdiskfs_VERSION_ARCH.deb in the current directory from a `make install` into a
# staging root with Debian's paths, then runs lintian on it (errors fail the build).
# Needs dpkg-dev and lintian (the Makefile's DEBS). VERSION comes from the Makefile.
set -euo pipefail
cd "$(dirname "$0")/.."
: "${VERSION:?run through make deb}"
changelog_version=$(sed -n '1s/^vdiskfs (\([^)]*\)).*/\1/p' packaging/debian/changelog)
if [ "$changelog_version" != "$VERSION" ]; then
  echo "make deb: packaging/debian/changelog's top entry is $changelog_version, the package is $VERSION" >&2
  exit 1
fi
arch=$(dpkg --print-architecture)
deb="vdiskfs_${VERSION}_${arch}.deb"
# dpkg-shlibdeps expects debian/control beside the staging root debian/<package>.
work=.build-static/deb
root=$work/debian/vdiskfs
rm -rf "$work" && mkdir -p "$root/DEBIAN"

make --no-print-directory install DESTDIR="$PWD/$root" PREFIX=/usr UNITDIR=/lib/systemd/system \
  ZSHCOMPDIR=/usr/share/zsh/vendor-completions

# Debian's rules: stripped binary, compressed man page and changelog, the copyright file.
strip --strip-unneeded --remove-section=.comment --remove-section=.note "$root/usr/bin/vdiskfs"
gzip -9n "$root/usr/share/man/man1/vdiskfs.1"
install -m 0644 packaging/debian/copyright "$root/usr/share/doc/vdiskfs/copyright"
gzip -9n < packaging/debian/changelog > "$root/usr/share/doc/vdiskfs/changelog.gz"
chmod 0644 "$root/usr/share/doc/vdiskfs/changelog.gz"

# Depends: what the binary links (dpkg-shlibdeps reads the shlibs of the installed libraries),
# and fuse3, which holds fusermount3 and mount.fuse3 and is no library dependency.
printf 'Source: vdiskfs\n\nPackage: vdiskfs\nArchitecture: any\n' > "$work/debian/control"
shlibs=$(cd "$work" && dpkg-shlibdeps -O debian/vdiskfs/usr/bin/vdiskfs | sed -n 's/^shlibs:Depends=//p')
depends="$shlibs, fuse3"
size=$(du -k -s --exclude=DEBIAN "$root" | cut -f1)
sed -e "s/@VERSION@/$VERSION/" -e "s/@ARCH@/$arch/" -e "s/@SIZE@/$size/" -e "s/@DEPENDS@/$depends/" \
  packaging/debian/control.in > "$root/DEBIAN/control"
find "$root" -type d -exec chmod 0755 {} +

dpkg-deb --root-owner-group -Zxz --build "$root" "$deb" >/dev/null
echo "built $deb"
echo "Depends: $depends"
# lintian's errors fail the build; its warnings are shown.
lintian --fail-on error "$deb"
