// swift-tools-version:6.0
import PackageDescription

let package = Package(
    name: "qlab",
    platforms: [.macOS(.v13)],
    products: [
        .library(name: "QMP", targets: ["QMP"]),
        .library(name: "LabCore", targets: ["LabCore"]),
        .executable(name: "qlab", targets: ["qlab"]),
        .executable(name: "qlab-bench", targets: ["qlab-bench"]),
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
        .target(name: "QMP", dependencies: ["CJansson"]),
        .target(name: "LabCore", dependencies: ["QMP", "Yams"]),
        .executableTarget(
            name: "qlab",
            dependencies: ["LabCore", "QMP", .product(name: "ArgumentParser", package: "swift-argument-parser")]
        ),
        .executableTarget(name: "qlab-bench", dependencies: ["LabCore", "QMP"]),
        .testTarget(name: "QMPTests", dependencies: ["QMP"]),
        .testTarget(name: "LabCoreTests", dependencies: ["LabCore", "QMP"]),
    ]
)
