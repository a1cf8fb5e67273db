# dkms-trigger: build, test, benchmark and install. Every distribution's packaging (debian/,
# rpm/, arch/) calls `make install` (or its install-<distro> variant) with DESTDIR and PREFIX.

PREFIX ?= /usr
SBINDIR ?= $(PREFIX)/sbin
DOCDIR ?= $(PREFIX)/share/doc/dkms-trigger
SYSCONFDIR ?= /etc
DESTDIR ?=
CARGO ?= cargo
CARGO_FLAGS ?= --locked
BIN ?= $(or $(CARGO_TARGET_DIR),target)/release/dkms-trigger

LIBDIR ?= $(PREFIX)/lib
DATADIR ?= $(PREFIX)/share
MANDIR ?= $(DATADIR)/man
# Shell completions, where each shell looks for a distribution's: bash-completion's and fish's
# directories are the same everywhere; zsh's is site-functions on Fedora and Arch, and Debian's
# packaging passes its vendor-completions.
BASH_COMPLETION_DIR ?= $(DATADIR)/bash-completion/completions
ZSH_COMPLETION_DIR ?= $(DATADIR)/zsh/site-functions
FISH_COMPLETION_DIR ?= $(DATADIR)/fish/vendor_completions.d
KERNEL_INSTALL_DIR ?= $(LIBDIR)/kernel/install.d
ALPM_HOOK_DIR ?= $(PREFIX)/share/libalpm/hooks
ALPM_SCRIPT_DIR ?= $(PREFIX)/share/libalpm/scripts
# The boot catch-up unit (hooks/systemd). Debian 12 keeps units in /lib/systemd/system: its
# debian/rules passes what `pkg-config --variable=systemdsystemunitdir systemd` says.
SYSTEMD_UNIT_DIR ?= $(LIBDIR)/systemd/system

.PHONY: all build check lint test deps bench demo install install-debian install-redhat install-arch clean

all: build

build:
	$(CARGO) build --release $(CARGO_FLAGS)

# Installs what the tests need from the distribution's packages (dkms, a compiler, the two newest
# linux-headers ABIs...), checks the code's rules (lint), then runs every test against the release
# binary.
check: deps lint
	$(CARGO) test --release --no-fail-fast $(CARGO_FLAGS) -- --test-threads=2

# clippy with the project's rules (clippy.toml: std::fs only in src/root.rs, programs only through
# src/runner.rs), every warning an error.
lint:
	$(CARGO) clippy --release --all-targets $(CARGO_FLAGS) -- -D warnings

# Tests only, for when the dependencies are known to be present.
test:
	$(CARGO) test --release $(CARGO_FLAGS)

# Everything the suites need: dkms, toolchain, headers, rpm, pacman, mmdebstrap, debhelper/lintian.
deps:
	tests/setup/install-deps.sh --rpm --pacman --chroot --deb

bench: deps
	$(CARGO) bench --benches $(CARGO_FLAGS)

# The try-it command: runs the tool's main job for real in a throwaway world (see README.md).
demo: build
	DKMS_TRIGGER=$(abspath $(BIN)) tests/demo.sh

# The completions and the man page are written by the binary just built (`dkms-trigger generate`,
# hidden), from the same clap definition as its command line, so they cannot drift from it. The man
# page is installed uncompressed: dh_compress, rpm's brp-compress and makepkg compress it.
install: build
	install -D -m 0755 $(BIN) $(DESTDIR)$(SBINDIR)/dkms-trigger
	install -d -m 0755 $(DESTDIR)$(SYSCONFDIR)/dkms-trigger/config.d
	install -D -m 0644 docs/config.md $(DESTDIR)$(DOCDIR)/config.md
	install -D -m 0644 README.md $(DESTDIR)$(DOCDIR)/README.md
	install -d -m 0755 $(DESTDIR)$(BASH_COMPLETION_DIR) $(DESTDIR)$(ZSH_COMPLETION_DIR) \
		$(DESTDIR)$(FISH_COMPLETION_DIR) $(DESTDIR)$(MANDIR)/man8
	$(BIN) generate completion bash >$(DESTDIR)$(BASH_COMPLETION_DIR)/dkms-trigger
	$(BIN) generate completion zsh >$(DESTDIR)$(ZSH_COMPLETION_DIR)/_dkms-trigger
	$(BIN) generate completion fish >$(DESTDIR)$(FISH_COMPLETION_DIR)/dkms-trigger.fish
	$(BIN) generate man >$(DESTDIR)$(MANDIR)/man8/dkms-trigger.8
	chmod 0644 $(DESTDIR)$(BASH_COMPLETION_DIR)/dkms-trigger $(DESTDIR)$(ZSH_COMPLETION_DIR)/_dkms-trigger \
		$(DESTDIR)$(FISH_COMPLETION_DIR)/dkms-trigger.fish $(DESTDIR)$(MANDIR)/man8/dkms-trigger.8
	install -d -m 0755 $(DESTDIR)$(SYSTEMD_UNIT_DIR)
	sed 's|@SBINDIR@|$(SBINDIR)|g' hooks/systemd/dkms-trigger.service.in \
		> $(DESTDIR)$(SYSTEMD_UNIT_DIR)/dkms-trigger.service
	chmod 0644 $(DESTDIR)$(SYSTEMD_UNIT_DIR)/dkms-trigger.service

# Distribution hooks: every file under hooks/<distro>/ is installed at the matching place. Debian
# also gets the stand-in for dkms's common.postinst (hooks/dkms/), which its package diverts.
install-debian: install
	cd hooks/debian && find . -type f | while read -r f; do \
		install -D -m 0755 "$$f" "$(DESTDIR)$(SYSCONFDIR)/kernel/$${f#./}"; done
	install -D -m 0755 hooks/dkms/common.postinst $(DESTDIR)$(LIBDIR)/dkms/common.postinst

# Also the preset that enables the boot catch-up unit (rpm's %systemd_post applies presets).
SYSTEMD_PRESET_DIR ?= $(LIBDIR)/systemd/system-preset
install-redhat: install
	install -D -m 0644 hooks/systemd/80-dkms-trigger.preset $(DESTDIR)$(SYSTEMD_PRESET_DIR)/80-dkms-trigger.preset
	for f in hooks/rpm/*.install; do \
		install -D -m 0755 "$$f" "$(DESTDIR)$(KERNEL_INSTALL_DIR)/$$(basename "$$f")"; done

install-arch: install
	for f in hooks/arch/*.hook; do \
		install -D -m 0644 "$$f" "$(DESTDIR)$(ALPM_HOOK_DIR)/$$(basename "$$f")"; done
	for f in hooks/arch/scripts/*; do \
		install -D -m 0755 "$$f" "$(DESTDIR)$(ALPM_SCRIPT_DIR)/$$(basename "$$f")"; done

clean:
	$(CARGO) clean

# rpm and pacman packages from this checkout (docs/rpm.md, docs/arch.md). Both build the binary
# with cargo first (`build`), then package the tree of `make install-redhat` / `make install-arch`.
# DIST: where the packages land; BIN (above) is the binary they package.
VERSION := $(shell sed -n 's/^version *= *"\(.*\)"/\1/p' Cargo.toml | head -n 1)
DIST ?= dist
RPM_TOPDIR ?= $(abspath $(DIST))/rpmbuild
# On Debian (tests, development): no rpm database knows the BuildRequires, and rpm's default
# database would be ~/.rpmdb.
RPMBUILD_FLAGS ?= $(if $(wildcard /etc/debian_version),--nodeps --dbpath $(RPM_TOPDIR)/rpmdb)
PKG_STAGE ?= $(abspath $(DIST))/pkgroot
PKG_ARCH ?= $(shell uname -m)

.PHONY: rpm pkg
# dist/dkms-trigger-VERSION-1*.rpm: rpm/dkms-trigger.spec with the binary built above (%{prebuilt}).
rpm: build
	rm -rf $(RPM_TOPDIR)
	mkdir -p $(RPM_TOPDIR)/SOURCES $(DIST)
	tar -czf $(RPM_TOPDIR)/SOURCES/dkms-trigger-$(VERSION).tar.gz --exclude-vcs --exclude=./target \
		--exclude=./dist --exclude='./.tmp*' --transform 's,^\.,dkms-trigger-$(VERSION),' .
	rpmbuild -bb $(RPMBUILD_FLAGS) --define '_topdir $(RPM_TOPDIR)' --define 'pkg_version $(VERSION)' \
		--define 'prebuilt $(abspath $(BIN))' rpm/dkms-trigger.spec
	cp $(RPM_TOPDIR)/RPMS/*/dkms-trigger-$(VERSION)-*.rpm $(DIST)/

# dist/dkms-trigger-VERSION-1-ARCH.pkg.tar.zst without makepkg (arch/pkgtar.sh); a real Arch build
# uses arch/PKGBUILD, which runs the same `make install-arch`. The man page is gzipped here as
# makepkg's zipman does.
pkg: build
	rm -rf $(PKG_STAGE)
	$(MAKE) install-arch DESTDIR=$(PKG_STAGE) PREFIX=/usr SBINDIR=/usr/bin CARGO=true BIN=$(BIN)
	install -D -m 0644 docs/arch.md $(PKG_STAGE)/usr/share/doc/dkms-trigger/arch.md
	gzip -9n $(PKG_STAGE)/usr/share/man/man8/dkms-trigger.8
	arch/pkgtar.sh --name dkms-trigger --version $(VERSION)-1 --arch $(PKG_ARCH) \
		--license GPL-2.0-or-later --desc 'Rebuild DKMS modules once, in order, at the end of a pacman transaction' \
		--depend dkms --depend kmod --install arch/dkms-trigger.install \
		--root $(PKG_STAGE) --out $(DIST)/dkms-trigger-$(VERSION)-1-$(PKG_ARCH).pkg.tar.zst

# The Debian package, from this tree: dist/dkms-trigger_<version>_<arch>.deb (docs/debian.md).
# debian/rules runs `make install-debian DESTDIR=... PREFIX=/usr`. Where the declared
# build-dependencies are installed (Debian 13: Debian's own cargo and rustc 1.85), they are checked
# like in any package build. Where they are not (Debian 12, whose rustc is older than 1.85: cargo
# and rustc come from rustup), -d skips that check; DEB_BUILD_DEPS_CHECK overrides the choice.
# dpkg-buildpackage writes into ..; the results are moved into dist/.
DEB_BUILD_DEPS_CHECK ?= $(shell dpkg-checkbuilddeps >/dev/null 2>&1 || echo -d)
.PHONY: deb
deb:
	@if [ -n "$(DEB_BUILD_DEPS_CHECK)" ]; then echo "make deb: Build-Depends not installed (dpkg-checkbuilddeps): building with the cargo on PATH and dpkg-buildpackage $(DEB_BUILD_DEPS_CHECK)"; fi
	dpkg-buildpackage -b -us -uc $(DEB_BUILD_DEPS_CHECK)
	set -e; v=$$(dpkg-parsechangelog -SVersion); a=$$(dpkg-architecture -qDEB_HOST_ARCH); \
	mkdir -p dist; \
	for f in dkms-trigger_$${v}_$${a}.deb dkms-trigger-dbgsym_$${v}_$${a}.deb \
		dkms-trigger_$${v}_$${a}.buildinfo dkms-trigger_$${v}_$${a}.changes; do \
		if [ -e "../$$f" ]; then mv -f "../$$f" dist/; fi; done; \
	echo "built dist/dkms-trigger_$${v}_$${a}.deb"
