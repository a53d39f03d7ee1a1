"""gofer: the file server (gVisor's gofer, in lisafs's role). It performs, on a sandboxed
program's behalf, every file operation that writes: it owns every host path the sandbox may
touch (a container's rootfs and bind mounts, resolved with openat2(RESOLVE_IN_ROOT |
RESOLVE_NO_MAGICLINKS) inside kernel-enforced detached mount clones), the mount policy
(read-only mounts, masked paths), and hands out the opened fds over its fd channel. Every
operation runs under the calling task's fsuid, fsgid and groups. It answers the Gofer domain
(common.messages.gofer) beside the System domain every service has. With directfs the sentry
runs this package's operations itself on the mount fds Gofer.MountFds donates
(services/sentry/directfs.py): the gofer still opens every mount and sets its policy.

Layout:
    __main__.py  the `gofer` console script (`python -m services.gofer`)
    server.py    setup(): the mount table, the Gofer domain, clean-up
    control.py   class Gofer: the RPC methods, run under the caller's credentials
    mounts.py    ContainerMounts (mount clones, path -> mount, masked paths), MountTable
    resolve.py   open_in / open_parent: resolution in root, "." and ".." never reach an *at call
    ops.py       Open, Mkdir, Mknod, Unlink, Rmdir, Symlink, Link, Rename
    attrs.py     Chmod, Chown, Truncate, Utimens, SetXattr, RemoveXattr, Access
    creds.py     taking on and giving back the caller's fs identity (per thread)
    syscalls.py  ctypes wrappers: openat2, open_tree, mount_setattr, renameat2, setfsuid, ...
"""
