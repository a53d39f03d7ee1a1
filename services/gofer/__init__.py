"""gofer: the file server. It owns every host path the sandbox may touch (a container's rootfs and
mounts, resolved with openat2(RESOLVE_IN_ROOT)), the mount policy, and hands out host fds over
its fd channel.

So far it answers only the System domain every service has (common.system).

Layout:
    __main__.py  the `gofer` console script (`python -m services.gofer`)
"""
