import Crypto
import CryptoExtras
import Foundation

/// The SCRAM mechanisms Kafka supports (RFC 5802 with RFC 7677's SHA-256, and SHA-512), with
/// the type codes of Kafka's DescribeUserScramCredentials / AlterUserScramCredentials.
public enum ScramMechanism: Int8, Sendable, CaseIterable, CustomStringConvertible {
    case sha256 = 1
    case sha512 = 2

    /// The SASL mechanism name: `SCRAM-SHA-256` or `SCRAM-SHA-512`.
    public var name: String { self == .sha256 ? "SCRAM-SHA-256" : "SCRAM-SHA-512" }
    public var description: String { name }

    public init?(name: String) {
        guard let found = Self.allCases.first(where: { $0.name == name.uppercased() }) else { return nil }
        self = found
    }

    /// Kafka's bounds on a credential's iteration count (`ScramMechanism.minIterations` /
    /// `maxIterations`).
    public static let minIterations: Int32 = 4096
    public static let maxIterations: Int32 = 16384

    /// The hash's output size in bytes (the salted password's length).
    public var keyLength: Int { self == .sha256 ? 32 : 64 }

    func hmac(key: some ContiguousBytes, _ data: some DataProtocol) -> [UInt8] {
        switch self {
        case .sha256: return Array(HMAC<SHA256>.authenticationCode(for: data, using: SymmetricKey(data: key)))
        case .sha512: return Array(HMAC<SHA512>.authenticationCode(for: data, using: SymmetricKey(data: key)))
        }
    }

    func hash(_ data: [UInt8]) -> [UInt8] {
        switch self {
        case .sha256: return Array(SHA256.hash(data: data))
        case .sha512: return Array(SHA512.hash(data: data))
        }
    }

    /// RFC 5802's `Hi(password, salt, i)`: PBKDF2 with this mechanism's HMAC. The password is
    /// used as given (Kafka does not apply SASLprep either).
    public func saltedPassword(_ password: String, salt: [UInt8], iterations: Int32) -> [UInt8] {
        let function: KDF.Insecure.PBKDF2.HashFunction = self == .sha256 ? .sha256 : .sha512
        // The rounds are Kafka's 4096…16384, below the library's default floor for new password
        // hashes, which is why the unchecked entry point is used; the bounds are checked here.
        let rounds = Int(Swift.max(iterations, 1))
        let key = try? KDF.Insecure.PBKDF2.deriveKey(from: Array(password.utf8), salt: salt, using: function,
                                                     outputByteCount: keyLength, unsafeUncheckedRounds: rounds)
        return key.map { $0.withUnsafeBytes { Array($0) } } ?? []
    }
}

/// What a broker keeps of a user's SCRAM password (RFC 5802's server-side credential, Kafka's
/// `ScramCredential`): the salt, the iteration count, StoredKey = H(HMAC(SaltedPassword,
/// "Client Key")) and ServerKey = HMAC(SaltedPassword, "Server Key"). The password itself and
/// the salted password are never stored, and neither can be recovered from these.
public struct ScramCredential: Sendable, Equatable {
    public var mechanism: ScramMechanism
    public var salt: [UInt8]
    public var storedKey: [UInt8]
    public var serverKey: [UInt8]
    public var iterations: Int32

    public init(mechanism: ScramMechanism, salt: [UInt8], storedKey: [UInt8], serverKey: [UInt8], iterations: Int32) {
        self.mechanism = mechanism
        self.salt = salt
        self.storedKey = storedKey
        self.serverKey = serverKey
        self.iterations = iterations
    }

    /// The credential of a salted password (what AlterUserScramCredentials carries).
    public init(mechanism: ScramMechanism, saltedPassword: [UInt8], salt: [UInt8], iterations: Int32) {
        let clientKey = mechanism.hmac(key: saltedPassword, Array("Client Key".utf8))
        self.init(mechanism: mechanism, salt: salt, storedKey: mechanism.hash(clientKey),
                  serverKey: mechanism.hmac(key: saltedPassword, Array("Server Key".utf8)), iterations: iterations)
    }

    /// The credential of a password with a fresh random salt.
    public init(mechanism: ScramMechanism, password: String, iterations: Int32 = ScramMechanism.minIterations) {
        let salt = randomBytes(32)
        self.init(mechanism: mechanism, saltedPassword: mechanism.saltedPassword(password, salt: salt, iterations: iterations),
                  salt: salt, iterations: iterations)
    }

    /// Whether `password` is this credential's password (SASL/PLAIN checked against the SCRAM
    /// store, as Redpanda does), compared in constant time.
    public func matches(password: String) -> Bool {
        let candidate = ScramCredential(mechanism: mechanism, saltedPassword: mechanism.saltedPassword(password, salt: salt, iterations: iterations),
                                        salt: salt, iterations: iterations)
        return constantTimeEqual(candidate.storedKey, storedKey)
    }
}

func randomBytes(_ count: Int) -> [UInt8] {
    var generator = SystemRandomNumberGenerator()
    return (0..<count).map { _ in UInt8.random(in: 0...255, using: &generator) }
}

func constantTimeEqual(_ a: [UInt8], _ b: [UInt8]) -> Bool {
    guard a.count == b.count else { return false }
    var difference: UInt8 = 0
    for index in a.indices { difference |= a[index] ^ b[index] }
    return difference == 0
}

/// Why an authentication exchange failed. The message is safe to send to the client: it says
/// what was malformed, never whether the user exists.
public struct SaslAuthenticationError: Error, Sendable, Equatable, CustomStringConvertible {
    public var message: String
    public init(_ message: String) { self.message = message }
    public var description: String { message }
}

/// The server side of one SCRAM exchange (RFC 5802 §3, Kafka's `ScramSaslServer`):
/// client-first → server-first → client-final → server-final.
///
/// Guarantees: the client is authenticated only when its proof verifies against the stored
/// credential for the nonce this server chose; an unknown user runs the exchange against a
/// made-up credential and fails at the proof, exactly as a wrong password does (nothing tells
/// the two apart); channel binding is refused (Kafka does not support it); a message of the
/// wrong shape fails the exchange. A pure value: no I/O, the caller moves the bytes.
public struct ScramServer: Sendable {
    public let mechanism: ScramMechanism
    private enum State: Sendable {
        case awaitingClientFirst
        case awaitingClientFinal(user: String, credential: ScramCredential, known: Bool, nonce: String,
                                 clientFirstBare: String, serverFirst: String, gs2Header: String)
        case done
    }
    private var state: State = .awaitingClientFirst

    public init(mechanism: ScramMechanism) {
        self.mechanism = mechanism
    }

    /// The result of one client message.
    public enum Step: Sendable, Equatable {
        /// Send these bytes and wait for the next client message.
        case challenge([UInt8])
        /// Authenticated as `user`; send these bytes (server-final) to the client.
        case authenticated(user: String, serverFinal: [UInt8])
    }

    /// Takes the next client message; `credential` looks a user's credential up.
    public mutating func receive(_ message: [UInt8], credential: (String) -> ScramCredential?) throws(SaslAuthenticationError) -> Step {
        guard let text = String(validating: message, as: UTF8.self) else {
            state = .done
            throw SaslAuthenticationError("SCRAM message is not UTF-8")
        }
        switch state {
        case .awaitingClientFirst:
            let first = try ClientFirstMessage(parsing: text)
            let found = credential(first.user)
            let used = found ?? ScramCredential(mechanism: mechanism, saltedPassword: randomBytes(mechanism.keyLength),
                                                salt: randomBytes(32), iterations: ScramMechanism.minIterations)
            let nonce = first.nonce + base64URLSafe(randomBytes(18))
            let serverFirst = "r=\(nonce),s=\(Data(used.salt).base64EncodedString()),i=\(used.iterations)"
            state = .awaitingClientFinal(user: first.user, credential: used, known: found != nil, nonce: nonce,
                                         clientFirstBare: first.bare, serverFirst: serverFirst, gs2Header: first.gs2Header)
            return .challenge(Array(serverFirst.utf8))
        case .awaitingClientFinal(let user, let stored, let known, let nonce, let clientFirstBare, let serverFirst, let gs2Header):
            state = .done
            let final = try ClientFinalMessage(parsing: text)
            guard final.channelBinding == Array(gs2Header.utf8) else {
                throw SaslAuthenticationError("SCRAM channel binding does not match the client-first message")
            }
            // RFC 5802 wants the nonce echoed exactly; Kafka's ScramSaslServer accepts any nonce that
            // ends with the server's, and librdkafka 2.0–2.3 relies on it (it sends its own nonce
            // again in front of the server's). The proof still covers the server's fresh nonce
            // through the AuthMessage, so a replayed exchange fails all the same.
            guard final.nonce.hasSuffix(nonce) else { throw SaslAuthenticationError("SCRAM nonce does not match the server's") }
            let authMessage = Array("\(clientFirstBare),\(serverFirst),\(final.withoutProof)".utf8)
            let clientSignature = mechanism.hmac(key: stored.storedKey, authMessage)
            guard final.proof.count == clientSignature.count else {
                throw SaslAuthenticationError("Authentication failed during authentication due to invalid credentials with SASL mechanism \(mechanism.name)")
            }
            let clientKey = zip(final.proof, clientSignature).map { $0 ^ $1 }
            guard known, constantTimeEqual(mechanism.hash(clientKey), stored.storedKey) else {
                throw SaslAuthenticationError("Authentication failed during authentication due to invalid credentials with SASL mechanism \(mechanism.name)")
            }
            let serverSignature = mechanism.hmac(key: stored.serverKey, authMessage)
            return .authenticated(user: user, serverFinal: Array("v=\(Data(serverSignature).base64EncodedString())".utf8))
        case .done:
            throw SaslAuthenticationError("SCRAM exchange already finished")
        }
    }
}

/// RFC 5802's client-first-message: `gs2-header client-first-message-bare`.
struct ClientFirstMessage {
    var gs2Header: String
    var bare: String
    var user: String
    var nonce: String

    init(parsing text: String) throws(SaslAuthenticationError) {
        // gs2-header = gs2-cbind-flag "," [ authzid ] ","
        let parts = text.split(separator: ",", maxSplits: 2, omittingEmptySubsequences: false)
        guard parts.count == 3 else { throw SaslAuthenticationError("invalid SCRAM client-first message") }
        switch parts[0] {
        case "n", "y": break
        default:
            throw SaslAuthenticationError(parts[0].hasPrefix("p=") ? "SCRAM channel binding is not supported"
                                                                  : "invalid SCRAM client-first message")
        }
        gs2Header = "\(parts[0]),\(parts[1]),"
        bare = String(parts[2])
        var user: String? = nil
        var nonce: String? = nil
        for attribute in bare.split(separator: ",", omittingEmptySubsequences: false) {
            if attribute.hasPrefix("n=") {
                user = try Self.saslName(attribute.dropFirst(2))
            } else if attribute.hasPrefix("r=") {
                nonce = String(attribute.dropFirst(2))
            } else if attribute.hasPrefix("m=") {
                throw SaslAuthenticationError("SCRAM mandatory extensions are not supported")
            }
            // Other attributes are extensions (Kafka's tokenauth=…), ignored.
        }
        guard let user, !user.isEmpty, let nonce, !nonce.isEmpty, nonce.utf8.allSatisfy({ $0 > 0x20 && $0 < 0x7F && $0 != 0x2C }) else {
            throw SaslAuthenticationError("invalid SCRAM client-first message: needs n=user and r=nonce")
        }
        let authzid = parts[1]
        if authzid.hasPrefix("a=") {
            guard try Self.saslName(authzid.dropFirst(2)) == user else {
                throw SaslAuthenticationError("SCRAM authorization id differs from the user name")
            }
        }
        self.user = user
        self.nonce = nonce
    }

    /// RFC 5802's saslname: `=2C` is `,` and `=3D` is `=`; any other `=` is malformed.
    static func saslName(_ text: Substring) throws(SaslAuthenticationError) -> String {
        guard text.contains("=") else { return String(text) }
        var out = ""
        var rest = text[...]
        while let equals = rest.firstIndex(of: "=") {
            out += rest[..<equals]
            let code = rest[rest.index(after: equals)...].prefix(2)
            switch code {
            case "2C": out += ","
            case "3D": out += "="
            default: throw SaslAuthenticationError("invalid SCRAM user name encoding")
            }
            rest = rest[rest.index(equals, offsetBy: 3)...]
        }
        return out + rest
    }
}

/// RFC 5802's client-final-message: `c=… ,r=… [,extensions] ,p=…`.
struct ClientFinalMessage {
    var channelBinding: [UInt8]
    var nonce: String
    var proof: [UInt8]
    /// Everything before `,p=` (part of the AuthMessage).
    var withoutProof: String

    init(parsing text: String) throws(SaslAuthenticationError) {
        guard let proofRange = text.range(of: ",p=", options: .backwards) else {
            throw SaslAuthenticationError("invalid SCRAM client-final message: no proof")
        }
        withoutProof = String(text[..<proofRange.lowerBound])
        guard let proof = Data(base64Encoded: String(text[proofRange.upperBound...])) else {
            throw SaslAuthenticationError("invalid SCRAM client-final message: the proof is not base64")
        }
        self.proof = Array(proof)
        var binding: [UInt8]? = nil
        var nonce: String? = nil
        for attribute in withoutProof.split(separator: ",", omittingEmptySubsequences: false) {
            if attribute.hasPrefix("c=") {
                binding = Data(base64Encoded: String(attribute.dropFirst(2))).map(Array.init)
            } else if attribute.hasPrefix("r=") {
                nonce = String(attribute.dropFirst(2))
            }
        }
        guard let binding, let nonce else { throw SaslAuthenticationError("invalid SCRAM client-final message: needs c= and r=") }
        channelBinding = binding
        self.nonce = nonce
    }
}

/// Base64 without `,` (RFC 5802 nonces are printable ASCII except `,`; base64 has none).
func base64URLSafe(_ bytes: [UInt8]) -> String {
    Data(bytes).base64EncodedString()
}

/// The client side of one SCRAM exchange (for Fjord's own client and tools).
public struct ScramClient: Sendable {
    public let mechanism: ScramMechanism
    private let user: String
    private let password: String
    private let clientNonce: String
    private var expectedServerSignature: [UInt8] = []
    private var clientFirstBare: String

    public init(mechanism: ScramMechanism, user: String, password: String) {
        self.init(mechanism: mechanism, user: user, password: password, nonce: base64URLSafe(randomBytes(18)))
    }

    /// With a given nonce (RFC 7677's test vector).
    init(mechanism: ScramMechanism, user: String, password: String, nonce: String) {
        self.mechanism = mechanism
        self.user = user
        self.password = password
        self.clientNonce = nonce
        let escaped = user.replacingOccurrences(of: "=", with: "=3D").replacingOccurrences(of: ",", with: "=2C")
        self.clientFirstBare = "n=\(escaped),r=\(clientNonce)"
    }

    /// The client-first message.
    public var clientFirst: [UInt8] { Array("n,,\(clientFirstBare)".utf8) }

    /// The client-final message answering the server-first message.
    public mutating func clientFinal(serverFirst: [UInt8]) throws(SaslAuthenticationError) -> [UInt8] {
        let text = String(decoding: serverFirst, as: UTF8.self)
        var nonce: String? = nil
        var salt: [UInt8]? = nil
        var iterations: Int32? = nil
        for attribute in text.split(separator: ",") {
            if attribute.hasPrefix("r=") { nonce = String(attribute.dropFirst(2)) }
            if attribute.hasPrefix("s=") { salt = Data(base64Encoded: String(attribute.dropFirst(2))).map(Array.init) }
            if attribute.hasPrefix("i=") { iterations = Int32(attribute.dropFirst(2)) }
            if attribute.hasPrefix("e=") { throw SaslAuthenticationError("server refused: \(attribute.dropFirst(2))") }
        }
        guard let nonce, nonce.hasPrefix(clientNonce), let salt, let iterations,
            (ScramMechanism.minIterations...ScramMechanism.maxIterations).contains(iterations)
        else { throw SaslAuthenticationError("invalid SCRAM server-first message") }
        let salted = mechanism.saltedPassword(password, salt: salt, iterations: iterations)
        let clientKey = mechanism.hmac(key: salted, Array("Client Key".utf8))
        let storedKey = mechanism.hash(clientKey)
        let withoutProof = "c=\(Data("n,,".utf8).base64EncodedString()),r=\(nonce)"
        let authMessage = Array("\(clientFirstBare),\(text),\(withoutProof)".utf8)
        let signature = mechanism.hmac(key: storedKey, authMessage)
        let proof = zip(clientKey, signature).map { $0 ^ $1 }
        expectedServerSignature = mechanism.hmac(key: mechanism.hmac(key: salted, Array("Server Key".utf8)), authMessage)
        return Array("\(withoutProof),p=\(Data(proof).base64EncodedString())".utf8)
    }

    /// Checks the server-final message: the server proved it knows the credential too.
    public func verify(serverFinal: [UInt8]) throws(SaslAuthenticationError) {
        let text = String(decoding: serverFinal, as: UTF8.self)
        guard text.hasPrefix("v="), let signature = Data(base64Encoded: String(text.dropFirst(2))),
            constantTimeEqual(Array(signature), expectedServerSignature)
        else { throw SaslAuthenticationError("the server's SCRAM signature does not verify") }
    }
}

/// SASL/PLAIN's one message (RFC 4616): `[authzid] NUL authcid NUL passwd`.
public struct PlainCredentials: Sendable, Equatable {
    public var user: String
    public var password: String

    public init(parsing message: [UInt8]) throws(SaslAuthenticationError) {
        let parts = message.split(separator: 0, maxSplits: 2, omittingEmptySubsequences: false)
        guard parts.count == 3, let authzid = String(validating: parts[0], as: UTF8.self),
            let user = String(validating: parts[1], as: UTF8.self), let password = String(validating: parts[2], as: UTF8.self),
            !user.isEmpty
        else { throw SaslAuthenticationError("Invalid SASL/PLAIN response: expected 3 tokens (authzid NUL user NUL password)") }
        guard authzid.isEmpty || authzid == user else {
            throw SaslAuthenticationError("Authentication failed: Client requested an authorization id that is different from username")
        }
        self.user = user
        self.password = password
    }
}
