// apple/swift-system's typed descriptor and errno, for every module that
// imports Platform: the rest of qlab names these, never Glibc's raw ints.
@_exported import struct SystemPackage.Errno
@_exported import struct SystemPackage.FileDescriptor
@_exported import struct SystemPackage.FilePermissions
