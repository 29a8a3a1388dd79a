// swift-tools-version: 6.1
// Fjord's hot-path benchmarks (ordo-one/package-benchmark), kept in their own package as
// swift-nio does, so the main package builds without the benchmark machinery.
// Run: cd Benchmarks && swift package benchmark   (or tools/bench micro)

import PackageDescription

let package = Package(
    name: "FjordBenchmarks",
    platforms: [.macOS(.v15)],
    dependencies: [
        .package(name: "fjord", path: ".."),
        .package(url: "https://github.com/ordo-one/benchmark.git", from: "1.38.1", traits: ["MallocInterposer"]),
        .package(url: "https://github.com/apple/swift-nio.git", from: "2.101.2"),
        .package(url: "https://github.com/apple/swift-system.git", from: "1.8.1"),
        .package(url: "https://github.com/groue/GRDB.swift.git", from: "7.10.0"),
    ],
    targets: [
        // Plain executable for tools/bench crc32c (throughput in GB/s, compared with Python's crc32c).
        .executableTarget(
            name: "fjord-crc32c-bench",
            dependencies: [.product(name: "FjordProtocol", package: "fjord")],
            path: "Tools/crc32c-bench"
        ),
        // Plain executable for tools/bench streams (stream index read vs partition scan).
        .executableTarget(
            name: "fjord-streams-bench",
            dependencies: [
                .product(name: "FjordClient", package: "fjord"),
                .product(name: "FjordEventSourcing", package: "fjord"),
                .product(name: "FjordProtocol", package: "fjord"),
                .product(name: "FjordProjections", package: "fjord"),
                .product(name: "FjordTesting", package: "fjord"),
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "GRDB", package: "GRDB.swift"),
            ],
            path: "Tools/streams-bench"
        ),
        .executableTarget(
            name: "StorageBenchmarks",
            dependencies: [
                .product(name: "Benchmark", package: "benchmark"),
                .product(name: "FjordProtocol", package: "fjord"),
                .product(name: "FjordStorage", package: "fjord"),
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "SystemPackage", package: "swift-system"),
            ],
            path: "Benchmarks/StorageBenchmarks",
            plugins: [.plugin(name: "BenchmarkPlugin", package: "benchmark")]
        ),
        .executableTarget(
            name: "ClientBenchmarks",
            dependencies: [
                .product(name: "Benchmark", package: "benchmark"),
                .product(name: "FjordClient", package: "fjord"),
                .product(name: "FjordTesting", package: "fjord"),
                .product(name: "NIOCore", package: "swift-nio"),
            ],
            path: "Benchmarks/ClientBenchmarks",
            plugins: [.plugin(name: "BenchmarkPlugin", package: "benchmark")]
        ),
        .executableTarget(
            name: "ProtocolBenchmarks",
            dependencies: [
                .product(name: "Benchmark", package: "benchmark"),
                .product(name: "FjordProtocol", package: "fjord"),
                .product(name: "NIOCore", package: "swift-nio"),
            ],
            path: "Benchmarks/ProtocolBenchmarks",
            plugins: [.plugin(name: "BenchmarkPlugin", package: "benchmark")]
        ),
    ]
)
