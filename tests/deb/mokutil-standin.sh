#!/bin/sh
# Runs inside the test chroot as /usr/local/sbin/mokutil. A chroot has no firmware (the real
# mokutil there says "EFI variables are not supported on this system"), so this stand-in answers
# the two questions dkms-trigger asks from /etc/mokutil-standin (sb=enabled|disabled|noefi,
# key=not-enrolled|enrolled|pending), with the real mokutil's wording, streams and exit statuses
# (src/mokutil.c of mokutil 0.6/0.7). Every call is appended to /var/log/mokutil-standin.log.
echo "$*" >>/var/log/mokutil-standin.log
. /etc/mokutil-standin
case "$1" in
--sb-state)
    case "$sb" in
    enabled) echo "SecureBoot enabled"; exit 0 ;;
    disabled) echo "SecureBoot disabled"; exit 1 ;;
    noefi) echo "EFI variables are not supported on this system" >&2; exit 1 ;;
    esac ;;
--test-key)
    case "$key" in
    not-enrolled) echo "$2 is not enrolled"; exit 1 ;;
    enrolled) echo "$2 is already enrolled"; exit 0 ;;
    pending) echo "$2 is already in the enrollment request"; exit 0 ;;
    esac ;;
esac
echo "mokutil stand-in: no answer for: $*" >&2
exit 2
