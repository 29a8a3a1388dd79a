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
        .library(name: "FjordMetadata", targets: ["FjordMetadata"]),
        .library(name: "FjordSecurity", targets: ["FjordSecurity"]),
        .library(name: "FjordEtcd", targets: ["FjordEtcd"]),
        .library(name: "FjordPostgresReplication", targets: ["FjordPostgresReplication"]),
        .library(name: "FjordCDC", targets: ["FjordCDC"]),
        .library(name: "FjordMetadataEtcd", targets: ["FjordMetadataEtcd"]),
        .library(name: "FjordBroker", targets: ["FjordBroker"]),
        .library(name: "FjordServer", targets: ["FjordServer"]),
        .library(name: "FjordClient", targets: ["FjordClient"]),
        .library(name: "FjordEventSourcing", targets: ["FjordEventSourcing"]),
        .library(name: "FjordProjections", targets: ["FjordProjections"]),
        // For contract tests and benchmarks of clients: a broker inside the calling process.
        .library(name: "FjordTesting", targets: ["FjordTesting"]),
        .executable(name: "fjord", targets: ["fjord"]),
    ],
    dependencies: [
        .package(url: "https://github.com/apple/swift-nio.git", from: "2.101.2"),
        .package(url: "https://github.com/apple/swift-system.git", from: "1.8.1"),
        .package(url: "https://github.com/apple/swift-log.git", from: "1.16.2"),
        .package(url: "https://github.com/apple/swift-metrics.git", from: "2.13.0"),
        .package(url: "https://github.com/swift-server/swift-prometheus.git", from: "2.4.1"),
        .package(url: "https://github.com/apple/swift-distributed-tracing.git", from: "1.7.3"),
        .package(url: "https://github.com/apple/swift-argument-parser.git", from: "1.8.2"),
        .package(url: "https://github.com/swift-server/swift-service-lifecycle.git", from: "2.13.0"),
        .package(url: "https://github.com/HdrHistogram/hdrhistogram-swift.git", from: "0.2.0"),
        .package(url: "https://github.com/groue/GRDB.swift.git", from: "7.10.0"),
        // etcd's gRPC API (FjordEtcd); the Swift code is generated once by tools/etcd/regenerate.
        .package(url: "https://github.com/grpc/grpc-swift-2.git", from: "2.4.3"),
        .package(url: "https://github.com/grpc/grpc-swift-nio-transport.git", from: "2.9.2"),
        .package(url: "https://github.com/grpc/grpc-swift-protobuf.git", from: "2.4.1"),
        .package(url: "https://github.com/apple/swift-protobuf.git", from: "1.39.0"),
        // TLS listeners (FjordServer) and SCRAM's hashes and PBKDF2 (FjordSecurity).
        .package(url: "https://github.com/apple/swift-nio-ssl.git", from: "2.37.6"),
        .package(url: "https://github.com/apple/swift-crypto.git", "4.0.0"..<"5.0.0"),
        .package(url: "https://github.com/vapor/postgres-nio.git", from: "1.33.2"),
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
        .target(
            name: "FjordMetadata",
            dependencies: ["FjordProtocol"],
            swiftSettings: strictSettings
        ),
        // A client of etcd v3's gRPC API: KV, transactions, leases, watches.
        .target(
            name: "FjordEtcd",
            dependencies: [
                .product(name: "GRPCCore", package: "grpc-swift-2"),
                .product(name: "GRPCNIOTransportHTTP2Posix", package: "grpc-swift-nio-transport"),
                .product(name: "GRPCProtobuf", package: "grpc-swift-protobuf"),
                .product(name: "SwiftProtobuf", package: "swift-protobuf"),
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "NIOPosix", package: "swift-nio"),
                .product(name: "Logging", package: "swift-log"),
            ],
            swiftSettings: strictSettings
        ),
        // Cluster metadata on etcd behind FjordMetadata's MetadataStore, and the controller.
        .target(
            name: "FjordMetadataEtcd",
            dependencies: [
                "FjordEtcd", "FjordMetadata", "FjordProtocol",
                .product(name: "Logging", package: "swift-log"),
            ],
            swiftSettings: strictSettings
        ),
        // PostgreSQL's replication protocol and pgoutput (CDC): what postgres-nio does not speak.
        .target(
            name: "FjordPostgresReplication",
            dependencies: [
                "FjordSecurity",
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "NIOPosix", package: "swift-nio"),
                .product(name: "NIOSSL", package: "swift-nio-ssl"),
                .product(name: "Crypto", package: "swift-crypto"),
            ],
            swiftSettings: strictSettings
        ),
        // Change data capture: PostgreSQL changes as Debezium's change events.
        .target(
            name: "FjordCDC",
            dependencies: [
                "FjordPostgresReplication", "FjordClient", "FjordProtocol",
                .product(name: "PostgresNIO", package: "postgres-nio"),
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "NIOSSL", package: "swift-nio-ssl"),
                .product(name: "Logging", package: "swift-log"),
                .product(name: "ServiceLifecycle", package: "swift-service-lifecycle"),
            ],
            swiftSettings: strictSettings
        ),
        // SASL's server and client exchanges (SCRAM, PLAIN): pure values over swift-crypto.
        .target(
            name: "FjordSecurity",
            dependencies: [
                .product(name: "Crypto", package: "swift-crypto"),
                .product(name: "CryptoExtras", package: "swift-crypto"),
            ],
            swiftSettings: strictSettings
        ),
        .target(
            name: "FjordBroker",
            dependencies: [
                "FjordProtocol",
                "FjordStorage",
                "FjordMetadata",
                "FjordSecurity",
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "Logging", package: "swift-log"),
                .product(name: "CoreMetrics", package: "swift-metrics"),
                .product(name: "SystemPackage", package: "swift-system"),
            ],
            swiftSettings: strictSettings
        ),
        .target(
            name: "FjordServer",
            dependencies: [
                "FjordBroker",
                "FjordStorage",
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "NIOPosix", package: "swift-nio"),
                .product(name: "NIOHTTP1", package: "swift-nio"),
                .product(name: "NIOSSL", package: "swift-nio-ssl"),
                .product(name: "Logging", package: "swift-log"),
                .product(name: "CoreMetrics", package: "swift-metrics"),
            ],
            swiftSettings: strictSettings
        ),
        .target(
            name: "FjordClient",
            dependencies: [
                "FjordProtocol",
                "FjordCompression",
                "FjordSecurity",
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "NIOPosix", package: "swift-nio"),
                .product(name: "NIOSSL", package: "swift-nio-ssl"),
                .product(name: "Logging", package: "swift-log"),
                .product(name: "Metrics", package: "swift-metrics"),
                .product(name: "CoreMetrics", package: "swift-metrics"),
                .product(name: "Instrumentation", package: "swift-distributed-tracing"),
            ],
            swiftSettings: strictSettings
        ),
        // Event sourcing on stream topics: EventStore (expected-version appends, stream reads,
        // subscriptions), typed events and aggregates.
        .target(
            name: "FjordEventSourcing",
            dependencies: [
                "FjordClient",
                "FjordProtocol",
                "FjordCompression",
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "NIOPosix", package: "swift-nio"),
            ],
            swiftSettings: strictSettings
        ),
        // CQRS projections: read models in SQLite (GRDB) with the checkpoint in the same transaction.
        .target(
            name: "FjordProjections",
            dependencies: [
                "FjordEventSourcing",
                "FjordClient",
                "FjordProtocol",
                .product(name: "GRDB", package: "GRDB.swift"),
                .product(name: "PostgresNIO", package: "postgres-nio"),
                .product(name: "Logging", package: "swift-log"),
                .product(name: "NIOCore", package: "swift-nio"),
            ],
            swiftSettings: strictSettings
        ),
        .target(
            name: "FjordTesting",
            dependencies: [
                "FjordBroker",
                "FjordServer",
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "NIOPosix", package: "swift-nio"),
                .product(name: "Logging", package: "swift-log"),
            ],
            swiftSettings: strictSettings
        ),
        .executableTarget(
            name: "fjord",
            dependencies: [
                "FjordServer",
                "FjordMetadataEtcd",
                "FjordBroker",
                "FjordClient",
                "FjordCDC",
                "FjordEventSourcing",
                "FjordProtocol",
                "FjordSecurity",
                .product(name: "Histogram", package: "hdrhistogram-swift"),
                .product(name: "ArgumentParser", package: "swift-argument-parser"),
                .product(name: "Logging", package: "swift-log"),
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "NIOPosix", package: "swift-nio"),
                .product(name: "ServiceLifecycle", package: "swift-service-lifecycle"),
                .product(name: "Metrics", package: "swift-metrics"),
                .product(name: "Prometheus", package: "swift-prometheus"),
                .product(name: "UnixSignals", package: "swift-service-lifecycle"),
                .product(name: "SystemPackage", package: "swift-system"),
            ],
            swiftSettings: strictSettings
        ),
        // The README's quick start, compiled with the package so it cannot rot.
        .executableTarget(
            name: "fjord-example-quickstart",
            dependencies: ["FjordClient", .product(name: "NIOCore", package: "swift-nio")],
            path: "Examples/QuickStart",
            swiftSettings: strictSettings
        ),
        // The event-sourcing example: commands on an aggregate, a SQLite projection, a small CLI.
        .executableTarget(
            name: "fjord-example-bank",
            dependencies: [
                "FjordEventSourcing", "FjordProjections",
                .product(name: "GRDB", package: "GRDB.swift"),
                .product(name: "NIOCore", package: "swift-nio"),
            ],
            path: "Examples/Bank",
            swiftSettings: strictSettings
        ),
        // The child process of the projection crash test: projects into SQLite until SIGKILLed.
        .executableTarget(
            name: "fjord-projection-crash-runner",
            dependencies: [
                "FjordEventSourcing", "FjordProjections",
                .product(name: "GRDB", package: "GRDB.swift"),
                .product(name: "PostgresNIO", package: "postgres-nio"),
                .product(name: "Logging", package: "swift-log"),
                .product(name: "NIOCore", package: "swift-nio"),
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
                "FjordStorage", "FjordTesting",
                "FjordCompression",
                "FjordProtocol",
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "SystemPackage", package: "swift-system"),
            ],
            swiftSettings: strictSettings
        ),
        .testTarget(
            name: "FjordSecurityTests",
            dependencies: ["FjordSecurity"],
            swiftSettings: strictSettings
        ),
        .testTarget(
            name: "FjordBrokerTests",
            dependencies: [
                "FjordBroker", "FjordMetadata", "FjordProtocol", "FjordStorage",
                .product(name: "Logging", package: "swift-log"),
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "SystemPackage", package: "swift-system"),
            ],
            swiftSettings: strictSettings
        ),
        .testTarget(
            name: "FjordClientTests",
            dependencies: [
                "FjordClient", "FjordProtocol", "FjordTesting", "FjordCompression",
                .product(name: "Instrumentation", package: "swift-distributed-tracing"),
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "NIOPosix", package: "swift-nio"),
            ],
            swiftSettings: strictSettings
        ),
        .testTarget(
            name: "FjordEventSourcingTests",
            dependencies: [
                "FjordEventSourcing", "FjordProjections", "FjordClient", "FjordProtocol", "FjordTesting", "FjordBroker", "FjordStorage",
                .product(name: "GRDB", package: "GRDB.swift"),
                .product(name: "NIOCore", package: "swift-nio"),
            ],
            swiftSettings: strictSettings
        ),
        .testTarget(
            name: "FjordServerTests",
            dependencies: [
                "FjordServer", "FjordBroker", "FjordProtocol",
                .product(name: "Logging", package: "swift-log"),
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "NIOEmbedded", package: "swift-nio"),
                .product(name: "NIOTestUtils", package: "swift-nio"),
            ],
            swiftSettings: strictSettings
        ),
        .testTarget(
            name: "FjordPostgresReplicationTests",
            dependencies: [
                "FjordPostgresReplication", "FjordTesting",
                .product(name: "NIOCore", package: "swift-nio"),
            ],
            swiftSettings: strictSettings
        ),
        .testTarget(
            name: "FjordCDCTests",
            dependencies: ["FjordCDC", "FjordPostgresReplication", .product(name: "Logging", package: "swift-log")],
            swiftSettings: strictSettings
        ),
        .testTarget(
            name: "FjordEtcdTests",
            dependencies: [
                "FjordEtcd", "FjordMetadataEtcd", "FjordMetadata", "FjordTesting",
                .product(name: "Logging", package: "swift-log"),
            ],
            swiftSettings: strictSettings
        ),
        .testTarget(
            name: "FjordProtocolTests",
            dependencies: [
                "FjordProtocol", "FjordTesting",
                "FjordCompression",
                .product(name: "NIOCore", package: "swift-nio"),
            ],
            exclude: ["Fixtures"],
            swiftSettings: strictSettings
        ),
    ]
)
