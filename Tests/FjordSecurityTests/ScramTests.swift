import Foundation
import Testing

@testable import FjordSecurity

@Suite("SCRAM and PLAIN exchanges")
struct ScramTests {
    @Test("the client side reproduces RFC 7677's SCRAM-SHA-256 example byte for byte")
    func rfc7677() throws {
        var client = ScramClient(mechanism: .sha256, user: "user", password: "pencil", nonce: "rOprNGfwEbeRWgbNEkqO")
        #expect(String(decoding: client.clientFirst, as: UTF8.self) == "n,,n=user,r=rOprNGfwEbeRWgbNEkqO")
        let serverFirst = "r=rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0,s=W22ZaJ0SNY7soEsUEjb6gQ==,i=4096"
        let final = try client.clientFinal(serverFirst: Array(serverFirst.utf8))
        #expect(String(decoding: final, as: UTF8.self)
            == "c=biws,r=rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0,p=dHzbZapWIk4jUhN+Ute9ytag9zjfMHgsqmmiz7AndVQ=")
        try client.verify(serverFinal: Array("v=6rriTRBi23WpRR/wtup+mMhUZUn/dB5nLTJRsjl95G4=".utf8))
        #expect(throws: SaslAuthenticationError.self) { try client.verify(serverFinal: Array("v=AAAA".utf8)) }
    }

    @Test("server and client agree for both mechanisms; a wrong password and an unknown user fail alike")
    func exchange() throws {
        for mechanism in ScramMechanism.allCases {
            let stored = ScramCredential(mechanism: mechanism, password: "s3cret", iterations: 4096)
            let lookup: (String) -> ScramCredential? = { $0 == "alice" ? stored : nil }

            var server = ScramServer(mechanism: mechanism)
            var client = ScramClient(mechanism: mechanism, user: "alice", password: "s3cret")
            guard case .challenge(let serverFirst) = try server.receive(client.clientFirst, credential: lookup) else {
                Issue.record("expected a challenge"); return
            }
            let final = try client.clientFinal(serverFirst: serverFirst)
            guard case .authenticated(let user, let serverFinal) = try server.receive(final, credential: lookup) else {
                Issue.record("expected success"); return
            }
            #expect(user == "alice")
            try client.verify(serverFinal: serverFinal)

            for (name, password) in [("alice", "wrong"), ("mallory", "s3cret")] {
                var server = ScramServer(mechanism: mechanism)
                var client = ScramClient(mechanism: mechanism, user: name, password: password)
                guard case .challenge(let first) = try server.receive(client.clientFirst, credential: lookup) else {
                    Issue.record("an unknown user must still get a challenge"); return
                }
                let final = try client.clientFinal(serverFirst: first)
                #expect(throws: SaslAuthenticationError.self) { try server.receive(final, credential: lookup) }
            }
        }
    }

    @Test("malformed SCRAM messages, channel binding and a replayed nonce are refused")
    func malformed() throws {
        let stored = ScramCredential(mechanism: .sha256, password: "pw")
        for message in ["", "n,,", "x,,n=a,r=b", "p=tls-unique,,n=a,r=b", "n,,n=,r=abc", "n,,n=a", "n,,n=a=2X,r=abc", "n,a=b,n=a,r=abc"] {
            var server = ScramServer(mechanism: .sha256)
            #expect(throws: SaslAuthenticationError.self, "\(message)") { try server.receive(Array(message.utf8)) { _ in stored } }
        }
        var server = ScramServer(mechanism: .sha256)
        _ = try server.receive(Array("n,,n=a,r=clientnonce".utf8)) { _ in stored }
        #expect(throws: SaslAuthenticationError.self) {
            try server.receive(Array("c=biws,r=clientnonce,p=AAAA".utf8)) { _ in stored }
        }
        #expect(throws: SaslAuthenticationError.self, "the exchange is over after a failure") {
            try server.receive(Array("n,,n=a,r=x".utf8)) { _ in stored }
        }
        #expect(try ClientFirstMessage.saslName("a=2Cb=3Dc") == "a,b=c")
    }

    @Test("a client-final nonce that ends with the server's is accepted, as Kafka does for librdkafka 2.0–2.3")
    func librdkafkaNonce() throws {
        let mechanism = ScramMechanism.sha512
        let stored = ScramCredential(mechanism: mechanism, password: "pw")
        var server = ScramServer(mechanism: mechanism)
        guard case .challenge(let first) = try server.receive(Array("n,,n=a,r=cnonce".utf8), credential: { _ in stored }) else {
            Issue.record("expected a challenge"); return
        }
        let serverFirst = String(decoding: first, as: UTF8.self)
        let fields = Dictionary(uniqueKeysWithValues: serverFirst.split(separator: ",").map { ($0.prefix(1), String($0.dropFirst(2))) })
        let serverNonce = try #require(fields["r"])
        let salt = try #require(fields["s"].flatMap { Data(base64Encoded: $0) })
        let iterations = try #require(fields["i"].flatMap { Int32($0) })
        let salted = mechanism.saltedPassword("pw", salt: Array(salt), iterations: iterations)
        // librdkafka 2.0–2.3 puts its own nonce again in front of the server's.
        let withoutProof = "c=biws,r=cnonce\(serverNonce)"
        let authMessage = Array("n=a,r=cnonce,\(serverFirst),\(withoutProof)".utf8)
        let clientKey = mechanism.hmac(key: salted, Array("Client Key".utf8))
        let proof = zip(clientKey, mechanism.hmac(key: mechanism.hash(clientKey), authMessage)).map { $0 ^ $1 }
        let final = "\(withoutProof),p=\(Data(proof).base64EncodedString())"
        guard case .authenticated(let user, _) = try server.receive(Array(final.utf8), credential: { _ in stored }) else {
            Issue.record("expected success"); return
        }
        #expect(user == "a")
        var other = ScramServer(mechanism: mechanism)
        _ = try other.receive(Array("n,,n=a,r=cnonce".utf8)) { _ in stored }
        #expect(throws: SaslAuthenticationError.self, "a nonce not ending with this server's") {
            try other.receive(Array(final.utf8)) { _ in stored }
        }
    }

    @Test("PLAIN: authzid NUL user NUL password, checked against the SCRAM credential")
    func plain() throws {
        let parsed = try PlainCredentials(parsing: Array("\u{0}alice\u{0}pw".utf8))
        #expect(parsed == (try PlainCredentials(parsing: Array("alice\u{0}alice\u{0}pw".utf8))))
        #expect(parsed.user == "alice" && parsed.password == "pw")
        for bad in ["alice", "\u{0}\u{0}pw", "bob\u{0}alice\u{0}pw"] {
            #expect(throws: SaslAuthenticationError.self) { try PlainCredentials(parsing: Array(bad.utf8)) }
        }
        let stored = ScramCredential(mechanism: .sha512, password: "pw")
        #expect(stored.matches(password: "pw"))
        #expect(!stored.matches(password: "pW"))
    }
}
