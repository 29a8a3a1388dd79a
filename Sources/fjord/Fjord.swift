import ArgumentParser

/// The `fjord` command: the broker and the client tools.
@main
struct Fjord: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "fjord",
        abstract: "An append-only event log broker that speaks Apache Kafka's protocol.",
        discussion: prose("""
            Client commands find the cluster with --bootstrap-server (or $FJORD_BOOTSTRAP, else
            127.0.0.1:9092) and take any Kafka client property with -X key=value or --command-config FILE.

            Exit codes: 0 success; 1 runtime error (unreachable broker, a Kafka error, a failed record),
            with a one-line message on stderr; 64 usage error.

            Shell completions: fjord --generate-completion-script bash|zsh|fish.
            """),
        subcommands: [Serve.self, Produce.self, Consume.self, Topics.self, Groups.self, Users.self, Acls.self, Quotas.self, Streams.self, CDC.self, Bench.self]
    )
}
