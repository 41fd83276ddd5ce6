#!/usr/bin/python3
"""A tiny FUSE filesystem serving one file, `disk.img`, backed by a real
file, that fails reads and writes touching chosen byte ranges with EIO.
Used by the tests to make a loop device with failing sectors (this machine
has no device-mapper). Foreground; unmount with `fusermount3 -u MOUNT` or
`umount MOUNT`.

    FAULTY_BACKING=/path/to/backing.img FAULTY_BAD=OFFSET:LENGTH[,OFFSET:LENGTH]
        python3 faulty_fs.py MOUNTPOINT -f
"""
import errno
import os
import stat
import sys

import fuse

fuse.fuse_python_api = (0, 2)

NAME = "/disk.img"


class FaultyFS(fuse.Fuse):
    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.backing = os.environ["FAULTY_BACKING"]
        self.bad = []
        for part in filter(None, os.environ.get("FAULTY_BAD", "").split(",")):
            offset, length = part.split(":")
            self.bad.append((int(offset), int(length)))
        self.fd = os.open(self.backing, os.O_RDWR)

    def _hits_bad(self, offset, size):
        return any(offset < start + length and start < offset + size for start, length in self.bad)

    def getattr(self, path):
        st = fuse.Stat()
        if path == "/":
            st.st_mode = stat.S_IFDIR | 0o755
            st.st_nlink = 2
            return st
        if path != NAME:
            return -errno.ENOENT
        st.st_mode = stat.S_IFREG | 0o644
        st.st_nlink = 1
        st.st_size = os.fstat(self.fd).st_size
        return st

    def readdir(self, path, offset):
        for name in (".", "..", NAME[1:]):
            yield fuse.Direntry(name)

    def open(self, path, flags):
        if path != NAME:
            return -errno.ENOENT
        info = fuse.FuseFileInfo()
        info.direct_io = True
        info.keep = False
        return info

    def read(self, path, size, offset, fh=None):
        if self._hits_bad(offset, size):
            return -errno.EIO
        return os.pread(self.fd, size, offset)

    def write(self, path, buf, offset, fh=None):
        if self._hits_bad(offset, len(buf)):
            return -errno.EIO
        return os.pwrite(self.fd, buf, offset)

    def truncate(self, path, size):
        return 0

    def fsync(self, path, isfsyncfile, fh=None):
        os.fsync(self.fd)
        return 0

    def flush(self, path, fh=None):
        return 0

    def release(self, path, flags, fh=None):
        return 0


def main():
    server = FaultyFS(version="%prog 1", usage=__doc__, dash_s_do="setsingle")
    server.parse(errex=1)
    server.multithreaded = False
    server.main()


if __name__ == "__main__":
    main()
