import ArgumentParser
import FjordClient
import FjordSecurity
import Foundation

/// `fjord users create|delete|list`: SASL/SCRAM users, as Kafka's
/// `kafka-configs.sh --alter --add-config 'SCRAM-SHA-512=[password=…]' --entity-type users`.
struct Users: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Create, delete and list SASL/SCRAM users (the broker keeps salted credentials, never passwords).",
        subcommands: [Create.self, Delete.self, List.self])

    static func mechanisms(_ names: [String]) throws -> [ScramMechanism] {
        try names.map { name in
            guard let mechanism = ScramMechanism(name: name) else {
                throw ValidationError("--mechanism \(name): expected SCRAM-SHA-256 or SCRAM-SHA-512")
            }
            return mechanism
        }
    }

    struct Create: AsyncParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Create a user, or set its password (one credential per mechanism; SASL/PLAIN logins check them too).")
        @OptionGroup var client: ClientOptions
        @Argument(help: "The user name.")
        var user: String
        @Option(help: "The password.")
        var password: String?
        @Option(help: ArgumentHelp("Read the password from the first line of a file.", valueName: "file"))
        var passwordFile: String?
        @Option(help: "SCRAM-SHA-256 and/or SCRAM-SHA-512 (repeatable; default both).")
        var mechanism: [String] = []
        @Option(help: "PBKDF2 iterations, 4096…16384.")
        var iterations: Int32 = ScramMechanism.minIterations

        func validate() throws {
            guard (password == nil) != (passwordFile == nil) else { throw ValidationError("give exactly one of --password and --password-file") }
            guard (ScramMechanism.minIterations...ScramMechanism.maxIterations).contains(iterations) else {
                throw ValidationError("--iterations: expected \(ScramMechanism.minIterations)…\(ScramMechanism.maxIterations)")
            }
            _ = try Users.mechanisms(mechanism)
        }

        func run() async throws {
            try await reportingErrors("users create") {
                var secret = password ?? ""
                if let passwordFile {
                    guard let text = try? String(contentsOfFile: passwordFile, encoding: .utf8) else {
                        throw CLIError("cannot read --password-file \(passwordFile)")
                    }
                    secret = String(text.split(separator: "\n", omittingEmptySubsequences: false).first ?? "")
                }
                guard !secret.isEmpty else { throw CLIError("the password is empty") }
                let chosen = try mechanism.isEmpty ? ScramMechanism.allCases : Users.mechanisms(mechanism)
                try await withAdmin(client) { admin in
                    for mechanism in chosen {
                        try await admin.upsertUserScramCredential(user: user, password: secret, mechanism: mechanism, iterations: iterations)
                    }
                }
                print("user \(user): \(chosen.map(\.name).joined(separator: ", "))")
            }
        }
    }

    struct Delete: AsyncParsableCommand {
        static let configuration = CommandConfiguration(abstract: "Delete a user's credentials (every mechanism unless --mechanism).")
        @OptionGroup var client: ClientOptions
        @Argument(help: "The user name.")
        var user: String
        @Option(help: "SCRAM-SHA-256 or SCRAM-SHA-512 (repeatable; default every credential of the user).")
        var mechanism: [String] = []

        func validate() throws { _ = try Users.mechanisms(mechanism) }

        func run() async throws {
            try await reportingErrors("users delete") {
                try await withAdmin(client) { admin in
                    var chosen = try Users.mechanisms(mechanism)
                    if chosen.isEmpty { chosen = try await admin.describeUserScramCredentials([user])[user, default: []].map(\.mechanism) }
                    for mechanism in chosen { try await admin.deleteUserScramCredential(user: user, mechanism: mechanism) }
                }
                print("deleted user \(user)")
            }
        }
    }

    struct List: AsyncParsableCommand {
        static let configuration = CommandConfiguration(abstract: "List users with their SCRAM mechanisms and iterations.")
        @OptionGroup var client: ClientOptions
        @Flag(help: "Print JSON.")
        var json = false

        func run() async throws {
            try await reportingErrors("users list") {
                let users = try await withAdmin(client) { try await $0.describeUserScramCredentials() }
                if json {
                    let object = users.mapValues { $0.map { ["mechanism": $0.mechanism.name, "iterations": Int($0.iterations)] as [String: Any] } }
                    let data = try JSONSerialization.data(withJSONObject: object, options: [.sortedKeys])
                    print(String(decoding: data, as: UTF8.self))
                    return
                }
                for (user, credentials) in users.sorted(by: { $0.key < $1.key }) {
                    print("\(user)\t" + credentials.map { "\($0.mechanism.name)(iterations=\($0.iterations))" }.joined(separator: ","))
                }
            }
        }
    }
}
