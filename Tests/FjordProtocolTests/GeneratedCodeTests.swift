import FjordTesting
import Foundation
import Testing

@Suite("Generated protocol code")
struct GeneratedCodeTests {
    /// Regenerates the protocol types into a temporary directory and fails when the committed
    /// files differ: nobody edits generated code by hand, and schema changes are regenerated.
    @Test("committed generated code equals the generator's output")
    func generatedCodeIsUpToDate() async throws {
        guard let schemas = Repository.sharedSchemas else {
            print("skipping: ../shared/kafka-protocol/messages is not beside the repository")
            return
        }
        let generator = try await ChildProcess.run("/usr/bin/env", [
            "python3", Repository.root.appendingPathComponent("tools/fjord-codegen/generate.py").path,
            "--check", "--schemas", schemas.path,
            "--out", Repository.root.appendingPathComponent("Sources/FjordProtocol/Generated").path,
        ], includingErrors: true)
        #expect(generator.status == 0, "\(generator.output)")
    }

    /// The generator emits a type for every API key in the schemas.
    @Test("every API key in the schemas has request and response types")
    func everyAPIKeyIsGenerated() throws {
        guard let schemas = Repository.sharedSchemas else { return }
        var keys = Set<Int16>()
        for name in try FileManager.default.contentsOfDirectory(atPath: schemas.path) where name.hasSuffix("Request.json") {
            let text = try String(contentsOf: schemas.appendingPathComponent(name), encoding: .utf8)
            if let range = text.range(of: #""apiKey":\s*(\d+)"#, options: .regularExpression) {
                let digits = text[range].split(separator: ":")[1].trimmingCharacters(in: .whitespaces)
                keys.insert(Int16(digits)!)
            }
        }
        #expect(keys.count > 80)
        for key in keys {
            #expect(APIKeyLookup.exists(key), "API key \(key) has no generated type")
        }
    }
}

import FjordProtocol

enum APIKeyLookup {
    static func exists(_ key: Int16) -> Bool { APIKey(rawValue: key) != nil }
}
