// swift-tools-version: 6.1
// Fjord: an append-only event log broker, wire-compatible with Apache Kafka.
// Module layout and allowed dependencies: docs/ARCHITECTURE.md.

import PackageDescription

let strictSettings: [SwiftSetting] = [
    .enableUpcomingFeature("ExistentialAny"),
    .enableUpcomingFeature("MemberImportVisibility"),
    .enableUpcomingFeature("InternalImportsByDefault"),
]

let package = Package(
    name: "fjord",
    platforms: [.macOS(.v15)],
    products: [
        .library(name: "FjordProtocol", targets: ["FjordProtocol"]),
        .library(name: "FjordCompression", targets: ["FjordCompression"]),
        .library(name: "FjordStorage", targets: ["FjordStorage"]),
    ],
    dependencies: [
        .package(url: "https://github.com/apple/swift-nio.git", from: "2.101.2"),
        .package(url: "https://github.com/apple/swift-system.git", from: "1.8.1"),
    ],
    targets: [
        // CRC32C kernel in C: the hardware instruction (SSE4.2 / ARMv8 CRC) with a portable fallback.
        .target(name: "CFjordCRC32C"),
        // Debian's zlib, snappy, lz4 and zstd, linked as system libraries.
        .systemLibrary(name: "CFjordCompression"),
        .target(
            name: "FjordCompression",
            dependencies: [
                "CFjordCompression",
                .product(name: "NIOCore", package: "swift-nio"),
            ],
            swiftSettings: strictSettings
        ),
        .target(
            name: "FjordProtocol",
            dependencies: [
                "CFjordCRC32C",
                "FjordCompression",
                .product(name: "NIOCore", package: "swift-nio"),
            ],
            swiftSettings: strictSettings
        ),
        .target(
            name: "FjordStorage",
            dependencies: [
                "FjordProtocol",
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "SystemPackage", package: "swift-system"),
            ],
            swiftSettings: strictSettings
        ),
        // The child process of the storage crash test: appends with fsync until SIGKILLed.
        .executableTarget(
            name: "fjord-log-crash-writer",
            dependencies: [
                "FjordStorage",
                "FjordProtocol",
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "SystemPackage", package: "swift-system"),
            ],
            swiftSettings: strictSettings
        ),
        .testTarget(
            name: "FjordStorageTests",
            dependencies: [
                "FjordStorage",
                "FjordCompression",
                "FjordProtocol",
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "SystemPackage", package: "swift-system"),
            ],
            swiftSettings: strictSettings
        ),
        .testTarget(
            name: "FjordProtocolTests",
            dependencies: [
                "FjordProtocol",
                "FjordCompression",
                .product(name: "NIOCore", package: "swift-nio"),
            ],
            exclude: ["Fixtures"],
            swiftSettings: strictSettings
        ),
    ]
)
