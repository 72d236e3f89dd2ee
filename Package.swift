// swift-tools-version:6.0
import PackageDescription

let package = Package(
    name: "qlab",
    platforms: [.macOS(.v13)],
    products: [
        .library(name: "Platform", targets: ["Platform"]),
        .library(name: "QMP", targets: ["QMP"]),
        .library(name: "LabSupervision", targets: ["LabSupervision"]),
        .library(name: "LabCore", targets: ["LabCore"]),
        .executable(name: "qlab", targets: ["qlab"]),
        .executable(name: "qlab-bench", targets: ["qlab-bench"]),
        .executable(name: "qlab-supervisor", targets: ["qlab-supervisor"]),
    ],
    dependencies: [
        .package(url: "https://github.com/apple/swift-argument-parser", from: "1.5.0"),
        .package(url: "https://github.com/jpsim/Yams", from: "6.0.0"),
        // One logger per module (-v/--log-level); Foundation-free, so the supervisor may use it.
        .package(url: "https://github.com/apple/swift-log", from: "1.16.2"),
        // Typed descriptors and errno (FileDescriptor, Errno) under Platform; Foundation-free.
        .package(url: "https://github.com/apple/swift-system", from: "1.8.1"),
    ],
    targets: [
        .systemLibrary(
            name: "CJansson",
            pkgConfig: "jansson",
            providers: [.apt(["libjansson-dev"])]
        ),
        // Thin system-call wrappers (errors, files, processes, sockets, waits):
        // Foundation-free, below QMP and the lab modules.
        .target(name: "Platform", dependencies: [.product(name: "SystemPackage", package: "swift-system")]),
        .target(name: "QMP", dependencies: ["CJansson", "Platform", .product(name: "Logging", package: "swift-log")]),
        // What a lab's supervisor needs (records, runtime dirs, processes):
        // Foundation-free, so the supervisor stays small (LabCore re-exports it).
        .target(name: "LabSupervision", dependencies: ["Platform", "QMP", .product(name: "Logging", package: "swift-log")]),
        .target(name: "LabCore", dependencies: ["LabSupervision", "Platform", "QMP", "Yams", .product(name: "Logging", package: "swift-log")]),
        .executableTarget(
            name: "qlab",
            dependencies: ["LabCore", "Platform", "QMP", .product(name: "ArgumentParser", package: "swift-argument-parser"), .product(name: "Logging", package: "swift-log")]
        ),
        .executableTarget(name: "qlab-bench", dependencies: ["LabCore", "Platform", "QMP"]),
        // Started by `qlab up` for each lab: no Foundation (see LabSupervision).
        .executableTarget(name: "qlab-supervisor", dependencies: ["LabSupervision", "Platform", "QMP", .product(name: "Logging", package: "swift-log")]),
        .testTarget(name: "QMPTests", dependencies: ["Platform", "QMP"]),
        .testTarget(name: "LabCoreTests", dependencies: ["LabCore", "Platform", "QMP"]),
    ]
)
