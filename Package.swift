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
    ],
    targets: [
        .systemLibrary(
            name: "CJansson",
            pkgConfig: "jansson",
            providers: [.apt(["libjansson-dev"])]
        ),
        // Thin system-call wrappers (errors, files, processes, sockets, waits):
        // Foundation-free, below QMP and the lab modules.
        .target(name: "Platform"),
        .target(name: "QMP", dependencies: ["CJansson", "Platform"]),
        // What a lab's supervisor needs (records, runtime dirs, processes):
        // Foundation-free, so the supervisor stays small (LabCore re-exports it).
        .target(name: "LabSupervision", dependencies: ["Platform", "QMP"]),
        .target(name: "LabCore", dependencies: ["LabSupervision", "Platform", "QMP", "Yams"]),
        .executableTarget(
            name: "qlab",
            dependencies: ["LabCore", "Platform", "QMP", .product(name: "ArgumentParser", package: "swift-argument-parser")]
        ),
        .executableTarget(name: "qlab-bench", dependencies: ["LabCore", "Platform", "QMP"]),
        // Started by `qlab up` for each lab: no Foundation (see LabSupervision).
        .executableTarget(name: "qlab-supervisor", dependencies: ["LabSupervision", "Platform", "QMP"]),
        .testTarget(name: "QMPTests", dependencies: ["Platform", "QMP"]),
        .testTarget(name: "LabCoreTests", dependencies: ["LabCore", "Platform", "QMP"]),
    ]
)
