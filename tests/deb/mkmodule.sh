#!/bin/bash
# Runs inside the test chroot. Generates a tiny DKMS module of our own and packages it the way
# dh_dkms does: /usr/src/NAME-VERSION/{dkms.conf,Makefile,NAME.c}, a postinst that calls dkms's
# REAL /usr/lib/dkms/common.postinst and a prerm that runs `dkms remove --all`.
#
#   mkmodule.sh NAME VERSION [options]    -> /root/debs/NAME-dkms_VERSION-REV_all.deb (path printed)
#     --autoinstall VALUE      AUTOINSTALL= value (default yes; "" makes a manual module)
#     --build-depends MOD      BUILD_DEPENDS on another DKMS module (repeatable)
#     --requires-installed MOD make refuses to build unless MOD is installed for the kernel being
#                              built: proves the dependency really was built first
#     --fail-on KVER|all       fails to compile for that kernel (or every kernel)
#     --fail-while FILE        make fails while FILE exists (a cause a test can remove again)
#     --hang-while FILE        make hangs (10 minutes) while FILE exists
#     --late-syntax-error      dkms.conf ends with a bash syntax error: dkms keeps what was set
#                              before it and builds the module, and so must dkms-trigger
#     --untrusted              one source file is world-writable: dkms would build it, dkms-trigger
#                              refuses to run such a source as root
#     --depends PKG            an extra Depends of the package (to force dpkg's configure order)
#     --revision REV           Debian revision (default 1)
#     --source-only            write /usr/src/NAME-VERSION only, no package (a hand-made module)
#
# Every build of the module appends one line to /var/log/dkms-test-builds.log:
#   build NAME VERSION KVER EPOCH.NANOS by=PKG
# PKG being the package whose maintainer script ran the build ($DPKG_MAINTSCRIPT_PACKAGE, "-" when
# none): that tells a build by dkms-trigger's trigger from one inside a module or kernel package.
set -euo pipefail

name=$1 version=$2
shift 2
autoinstall=yes revision=1 source_only='' fail_on='' depends="dkms" fail_while='' hang_while='' untrusted='' late_error=''

build_depends=() requires=()
while (($#)); do
    case "$1" in
    --autoinstall) autoinstall=$2; shift 2 ;;
    --build-depends) build_depends+=("$2"); shift 2 ;;
    --requires-installed) requires+=("$2"); shift 2 ;;
    --fail-on) fail_on=$2; shift 2 ;;
    --fail-while) fail_while=$2; shift 2 ;;
    --hang-while) hang_while=$2; shift 2 ;;
    --untrusted) untrusted=1; shift ;;
    --late-syntax-error) late_error=1; shift ;;
    --depends) depends+=", $2"; shift 2 ;;
    --revision) revision=$2; shift 2 ;;
    --source-only) source_only=1; shift ;;
    *) echo "mkmodule.sh: unknown option $1" >&2; exit 2 ;;
    esac
done
ident=${name//-/_}

write_source() { # DIR
    local d=$1 i
    mkdir -p "$d"
    {
        echo "# Generated test module (dkms-trigger tests/deb/mkmodule.sh)."
        echo "PACKAGE_NAME=\"$name\""
        echo "PACKAGE_VERSION=\"$version\""
        echo "BUILT_MODULE_NAME[0]=\"$name\""
        echo "DEST_MODULE_LOCATION[0]=\"/updates/dkms\""
        echo "AUTOINSTALL=\"$autoinstall\""
        for i in "${!build_depends[@]}"; do echo "BUILD_DEPENDS[$i]=\"${build_depends[$i]}\""; done
        [[ -z $late_error ]] || echo 'if then; fi # a syntax error in the last line'
    } >"$d/dkms.conf"
    {
        echo "# Generated test module (dkms-trigger tests/deb/mkmodule.sh); read by Kbuild."
        echo "obj-m := $name.o"
        for r in "${requires[@]}"; do
            echo "ifneq (\$(KERNELRELEASE),)"
            echo "ifeq (\$(wildcard /lib/modules/\$(KERNELRELEASE)/updates/dkms/$r.ko*),)"
            echo "\$(error $name needs $r installed for \$(KERNELRELEASE) first (BUILD_DEPENDS))"
            echo "endif"
            echo "endif"
        done
        case "$fail_on" in
        "") ;;
        all) echo "ccflags-y += -DDKMS_TEST_FAIL" ;;
        *) printf 'ifeq ($(KERNELRELEASE),%s)\nccflags-y += -DDKMS_TEST_FAIL\nendif\n' "$fail_on" ;;
        esac
        echo "# The build recorder: one line per build, for the tests."
        echo "\$(obj)/$name.o: \$(obj)/.test-build-record"
        echo "\$(obj)/.test-build-record:"
        printf '\t@echo "build %s %s $(KERNELRELEASE) $$(date +%%s.%%N) by=$${DPKG_MAINTSCRIPT_PACKAGE:--}" >> /var/log/dkms-test-builds.log\n' "$name" "$version"
        if [[ -n $fail_while ]]; then
            printf '\t@if [ -e %s ]; then echo "%s: broken on purpose while %s exists" >&2; exit 1; fi\n' "$fail_while" "$name" "$fail_while"
        fi
        if [[ -n $hang_while ]]; then
            printf '\t@if [ -e %s ]; then sleep 600; fi\n' "$hang_while"
        fi
        printf '\t@touch $@\n'
    } >"$d/Makefile"
    cat >"$d/$name.c" <<EOT
// SPDX-License-Identifier: GPL-2.0
/* Generated test module $name $version (dkms-trigger tests/deb/mkmodule.sh). */
#include <linux/init.h>
#include <linux/module.h>
#ifdef DKMS_TEST_FAIL
#error "dkms-trigger test module $name $version: fails to compile for this kernel on purpose"
#endif

static int __init ${ident}_init(void)
{
	pr_info("$name $version loaded\n");
	return 0;
}

static void __exit ${ident}_exit(void)
{
}

module_init(${ident}_init);
module_exit(${ident}_exit);
MODULE_LICENSE("GPL");
MODULE_VERSION("$version");
MODULE_DESCRIPTION("dkms-trigger test module $name");
EOT
}

if [[ -n $source_only ]]; then
    write_source "/usr/src/$name-$version"
    [[ -z $untrusted ]] || chmod 0666 "/usr/src/$name-$version/$name.c"
    echo "/usr/src/$name-$version"
    exit 0
fi

pkg=$name-dkms
tree=$(mktemp -d)
trap 'rm -rf "$tree"' EXIT
write_source "$tree/usr/src/$name-$version"
[[ -z $untrusted ]] || chmod 0666 "$tree/usr/src/$name-$version/$name.c"
mkdir -p "$tree/DEBIAN" /root/debs
cat >"$tree/DEBIAN/control" <<EOT
Package: $pkg
Version: $version-$revision
Architecture: all
Section: kernel
Priority: optional
Maintainer: dkms-trigger tests <tests@dkms-trigger.invalid>
Depends: $depends
Description: dkms-trigger test module $name (DKMS source)
 Generated by tests/deb/mkmodule.sh.
EOT
# What dh_dkms's postinst and prerm snippets do (dh-dkms 3.0.10), reduced to their effect.
cat >"$tree/DEBIAN/postinst" <<EOT
#!/bin/sh
set -e
case "\$1" in
configure)
	/usr/lib/dkms/common.postinst $name $version /usr/share/$pkg "" \$2
	;;
esac
exit 0
EOT
cat >"$tree/DEBIAN/prerm" <<EOT
#!/bin/sh
set -e
case "\$1" in
remove|upgrade|deconfigure)
	if [ "\$(dkms status -m $name -v $version)" ]; then
		dkms remove -m $name -v $version --all
	fi
	;;
esac
exit 0
EOT
chmod 0755 "$tree/DEBIAN/postinst" "$tree/DEBIAN/prerm"
out=/root/debs/${pkg}_$version-${revision}_all.deb
dpkg-deb --root-owner-group -Zgzip -b "$tree" "$out" >/dev/null
echo "$out"
