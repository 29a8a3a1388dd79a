import ArgumentParser

/// The `fjord` command: the broker and, in later steps, the client tools.
@main
struct Fjord: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "fjord",
        abstract: "An append-only event log broker that speaks Apache Kafka's protocol.",
        discussion: """
            Exit codes: 0 success, 1 runtime error (a clear one-line message on stderr), 64 usage error.
            """,
        subcommands: [Serve.self]
    )
}
