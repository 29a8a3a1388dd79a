import FjordMetadata
import FjordProtocol
import FjordSecurity
import Logging
import NIOCore
import Synchronization

// SASL authentication (Kafka's SaslServerAuthenticator) and SCRAM credential management.
//
// On a SASL_PLAINTEXT or SASL_SSL listener a connection may send only ApiVersions,
// SaslHandshake and SaslAuthenticate until it has logged in; anything else closes it, as Kafka
// does. After SaslHandshake v0 the tokens come as raw size-prefixed frames, after v1 inside
// SaslAuthenticate requests. A failed login is logged, answered after
// `connection.failed.authentication.delay.ms` with SASL_AUTHENTICATION_FAILED, and the
// connection is closed. With `connections.max.reauth.ms` (KIP-368) the session ends after that
// long: the client re-authenticates on the same connection (as the same principal), or its
// next other request closes the connection.

extension KafkaAPIs {
    /// What the SASL gate decides for one frame of a SASL listener's connection.
    enum SaslGate {
        /// Not a SASL matter: dispatch the request.
        case pass
        /// Answered (or refused) by the gate.
        case reply(BrokerReply)
    }

    /// The gate in front of dispatch on SASL listeners.
    func saslGate(_ frame: ByteBuffer, _ connection: ClientConnection) async -> SaslGate {
        let (rawToken, principal, expiresAt) = connection.auth.withLock { ($0.expectsRawToken, $0.principal, $0.sessionExpiresAtMs) }
        if rawToken {
            return .reply(await authenticate(token: Array(frame.readableBytesView), connection: connection, legacy: true).reply)
        }
        guard let header = try? RequestFrame(parsing: frame) else { return .pass }  // dispatch closes it
        switch header.apiKey {
        case .apiVersions, .saslHandshake, .saslAuthenticate:
            return .pass
        default:
            guard principal != nil else {
                return .reply(.closeConnection(reason: "unexpected \(header.apiKey.name) request before SASL authentication"))
            }
            if let expiresAt, clock() >= expiresAt {
                return .reply(.closeConnection(reason: "the SASL session expired (connections.max.reauth.ms) without re-authentication"))
            }
            return .pass
        }
    }

    func handleSaslHandshake(_ request: SaslHandshakeRequest, _ context: RequestContext) -> BrokerReply {
        var response = SaslHandshakeResponse()
        let connection = context.connection
        guard connection.securityProtocol.usesSASL else {
            response.errorCode = KafkaError.illegalSaslState.code
            return encode(response, context)
        }
        let enabled = config.saslEnabledMechanisms[connection.listenerName] ?? []
        response.mechanisms = enabled
        guard enabled.contains(request.mechanism.uppercased()) else {
            response.errorCode = KafkaError.unsupportedSaslMechanism.code
            logger.info("SASL mechanism not enabled", metadata: [
                "remote": "\(connection.clientHost)", "listener": "\(connection.listenerName)", "mechanism": "\(request.mechanism)",
            ])
            return refuse(response, context, reason: "unsupported SASL mechanism \(request.mechanism)")
        }
        let legacy = context.version == 0
        let accepted = connection.auth.withLock { state -> Bool in
            // Re-authentication (KIP-368) needs SaslAuthenticate: a v0 handshake only logs in.
            if state.principal != nil && legacy { return false }
            state.exchange = .handshaken(mechanism: request.mechanism.uppercased(), legacy: legacy)
            return true
        }
        guard accepted else {
            response.errorCode = KafkaError.illegalSaslState.code
            return refuse(response, context, reason: "re-authentication needs SaslHandshake v1")
        }
        return encode(response, context)
    }

    func handleSaslAuthenticate(_ request: SaslAuthenticateRequest, _ context: RequestContext) async -> BrokerReply {
        let connection = context.connection
        var response = SaslAuthenticateResponse()
        response.errorMessage = nil
        let inExchange = connection.auth.withLock { state -> Bool in
            if case .idle = state.exchange { return false }
            return !state.expectsRawToken
        }
        guard connection.securityProtocol.usesSASL, inExchange else {
            response.errorCode = KafkaError.illegalSaslState.code
            response.errorMessage = "SaslAuthenticate before SaslHandshake v1"
            return refuse(response, context, reason: "SaslAuthenticate out of order")
        }
        let outcome = await authenticate(token: Array(request.authBytes.readableBytesView), connection: connection, legacy: false)
        switch outcome {
        case .challenge(let bytes):
            response.authBytes = ByteBuffer(bytes: bytes)
            return encode(response, context)
        case .authenticated(let bytes, let lifetimeMs):
            response.authBytes = ByteBuffer(bytes: bytes)
            if context.version >= 1 { response.sessionLifetimeMs = lifetimeMs }
            return encode(response, context)
        case .failed(let message):
            response.errorCode = KafkaError.saslAuthenticationFailed.code
            response.errorMessage = message
            return refuse(response, context, reason: message)
        }
    }

    enum AuthenticationOutcome {
        case challenge([UInt8])
        case authenticated([UInt8], lifetimeMs: Int64)
        case failed(String)

        /// As a raw-token reply (after a v0 handshake): the token, or the connection closed.
        var reply: BrokerReply {
            switch self {
            case .challenge(let bytes), .authenticated(let bytes, _):
                return .response([.bytes(ByteBuffer(bytes: bytes))])
            case .failed(let message):
                return .closeConnection(reason: message)
            }
        }
    }

    /// Runs one client token through the connection's exchange.
    func authenticate(token: [UInt8], connection: ClientConnection, legacy: Bool) async -> AuthenticationOutcome {
        let image = metadata.image
        let lookup: (String, ScramMechanism) -> ScramCredential? = { user, mechanism in
            image.scramCredential(user: user, mechanism: mechanism.name).map { ScramCredential($0, mechanism) }
        }
        let (step, previous) = connection.auth.withLock { state -> (Result<(String?, [UInt8]), SaslAuthenticationError>, KafkaPrincipal?) in
            let previous = state.principal
            switch state.exchange {
            case .idle:
                return (.failure(SaslAuthenticationError("no SASL exchange in progress")), previous)
            case .handshaken(let mechanism, _) where mechanism == "PLAIN":
                state.exchange = .idle
                do throws(SaslAuthenticationError) {
                    let credentials = try PlainCredentials(parsing: token)
                    let known = ScramMechanism.allCases.compactMap { lookup(credentials.user, $0) }
                    guard let stored = known.first, stored.matches(password: credentials.password) else {
                        return (.failure(SaslAuthenticationError("Authentication failed: Invalid username or password")), previous)
                    }
                    return (.success((credentials.user, [])), previous)
                } catch {
                    return (.failure(error), previous)
                }
            case .handshaken(let name, let legacy):
                guard let mechanism = ScramMechanism(name: name) else {
                    state.exchange = .idle
                    return (.failure(SaslAuthenticationError("unsupported SASL mechanism \(name)")), previous)
                }
                var server = ScramServer(mechanism: mechanism)
                return (Self.scramStep(&server, token, &state, legacy: legacy) { lookup($0, mechanism) }, previous)
            case .scram(var server, let legacy):
                let mechanism = server.mechanism
                return (Self.scramStep(&server, token, &state, legacy: legacy) { lookup($0, mechanism) }, previous)
            }
        }
        switch step {
        case .success((nil, let challenge)):
            return .challenge(challenge)
        case .success((let user?, let final)):
            let principal = KafkaPrincipal(name: user)
            if let previous, previous != principal {
                // KIP-368: a re-authentication may not change who the connection is.
                await failedLoginDelay()
                logger.warning("SASL re-authentication as another principal refused", metadata: [
                    "remote": "\(connection.clientHost)", "from": "\(previous)", "to": "\(principal)",
                ])
                return .failed("Cannot change principals during re-authentication from \(previous) to \(principal)")
            }
            let reauthMs = config.connectionsMaxReauthMs
            let now = clock()
            connection.auth.withLock { state in
                state.principal = principal
                state.exchange = .idle
                state.sessionExpiresAtMs = reauthMs > 0 ? now + reauthMs : nil
            }
            logger.debug("SASL login", metadata: ["remote": "\(connection.clientHost)", "principal": "\(principal)", "reauthentication": "\(previous != nil)"])
            return .authenticated(final, lifetimeMs: reauthMs)
        case .failure(let error):
            connection.auth.withLock { $0.exchange = .idle }
            await failedLoginDelay()
            logger.warning("SASL authentication failed", metadata: [
                "remote": "\(connection.clientHost)", "listener": "\(connection.listenerName)", "error": "\(error.message)",
            ])
            return .failed(error.message)
        }
    }

    /// One SCRAM message: `(nil, challenge)` to go on, `(user, server-final)` when done.
    private static func scramStep(_ server: inout ScramServer, _ token: [UInt8], _ state: inout AuthState, legacy: Bool,
                                  credential: (String) -> ScramCredential?) -> Result<(String?, [UInt8]), SaslAuthenticationError> {
        do {
            switch try server.receive(token, credential: credential) {
            case .challenge(let bytes):
                state.exchange = .scram(server, legacy: legacy)
                return .success((nil, bytes))
            case .authenticated(let user, let final):
                state.exchange = .idle
                return .success((user, final))
            }
        } catch {
            state.exchange = .idle
            return .failure(error)
        }
    }

    private func failedLoginDelay() async {
        let delay = config.connectionFailedAuthenticationDelayMs
        if delay > 0 { await RequestQuotaScope.parked { try? await Task.sleep(for: .milliseconds(delay)) } }
    }

    /// A SASL answer after which Kafka closes the connection.
    private func refuse<Response: KafkaResponse>(_ response: Response, _ context: RequestContext, reason: String) -> BrokerReply {
        guard case .response(let parts) = encode(response, context) else { return .closeConnection(reason: reason) }
        return .responseThenClose(parts, reason: reason)
    }

    // MARK: SCRAM credentials

    func handleDescribeUserScramCredentials(_ request: DescribeUserScramCredentialsRequest) -> DescribeUserScramCredentialsResponse {
        var response = DescribeUserScramCredentialsResponse()
        let all = metadata.image.scramCredentials ?? [:]
        let requested = request.users.map { $0.map(\.name) } ?? []
        let names = requested.isEmpty ? all.keys.sorted() : requested
        var counts: [String: Int] = [:]
        for name in requested { counts[name, default: 0] += 1 }
        var seen = Set<String>()
        for name in names where seen.insert(name).inserted {
            var result = DescribeUserScramCredentialsResponse.DescribeUserScramCredentialsResult()
            result.user = name
            if counts[name, default: 0] > 1 {
                result.errorCode = KafkaError.duplicateResource.code
                result.errorMessage = "Cannot describe SCRAM credentials for the same user twice in a single request: \(name)"
            } else if let credentials = all[name], !credentials.isEmpty {
                result.errorMessage = nil
                result.credentialInfos = credentials.compactMap { record in
                    guard let mechanism = ScramMechanism(name: record.mechanism) else { return nil }
                    var info = DescribeUserScramCredentialsResponse.CredentialInfo()
                    info.mechanism = mechanism.rawValue
                    info.iterations = record.iterations
                    return info
                }
            } else {
                result.errorCode = KafkaError.resourceNotFound.code
                result.errorMessage = "Attempt to describe a user credential that does not exist: \(name)"
            }
            response.results.append(result)
        }
        response.errorMessage = nil
        return response
    }

    func handleAlterUserScramCredentials(_ request: AlterUserScramCredentialsRequest) async -> AlterUserScramCredentialsResponse {
        var response = AlterUserScramCredentialsResponse()
        let image = metadata.image
        var errors: [String: (KafkaError, String)] = [:]
        var changes: [ScramCredentialChange] = []
        var users: [String] = []
        var pairs: [String: Int] = [:]
        for deletion in request.deletions { pairs["\(deletion.name)\u{0}\(deletion.mechanism)", default: 0] += 1 }
        for upsertion in request.upsertions { pairs["\(upsertion.name)\u{0}\(upsertion.mechanism)", default: 0] += 1 }
        func fail(_ user: String, _ code: KafkaError, _ message: String) {
            if errors[user] == nil { errors[user] = (code, message) }
        }
        for deletion in request.deletions {
            if !users.contains(deletion.name) { users.append(deletion.name) }
            guard !deletion.name.isEmpty else { fail(deletion.name, .unacceptableCredential, "Username must not be empty"); continue }
            guard let mechanism = ScramMechanism(rawValue: deletion.mechanism) else {
                fail(deletion.name, .unsupportedSaslMechanism, "Unknown SCRAM mechanism \(deletion.mechanism)"); continue
            }
            guard pairs["\(deletion.name)\u{0}\(deletion.mechanism)"] == 1 else {
                fail(deletion.name, .duplicateResource, "A user credential cannot be altered twice in the same request"); continue
            }
            guard image.scramCredential(user: deletion.name, mechanism: mechanism.name) != nil else {
                fail(deletion.name, .resourceNotFound, "Attempt to delete a user credential that does not exist"); continue
            }
            changes.append(ScramCredentialChange(user: deletion.name, mechanism: mechanism.name, credential: nil))
        }
        for upsertion in request.upsertions {
            if !users.contains(upsertion.name) { users.append(upsertion.name) }
            guard !upsertion.name.isEmpty else { fail(upsertion.name, .unacceptableCredential, "Username must not be empty"); continue }
            guard let mechanism = ScramMechanism(rawValue: upsertion.mechanism) else {
                fail(upsertion.name, .unsupportedSaslMechanism, "Unknown SCRAM mechanism \(upsertion.mechanism)"); continue
            }
            guard pairs["\(upsertion.name)\u{0}\(upsertion.mechanism)"] == 1 else {
                fail(upsertion.name, .duplicateResource, "A user credential cannot be altered twice in the same request"); continue
            }
            guard upsertion.iterations >= ScramMechanism.minIterations else {
                fail(upsertion.name, .unacceptableCredential, "Too few iterations (minimum \(ScramMechanism.minIterations))"); continue
            }
            guard upsertion.iterations <= ScramMechanism.maxIterations else {
                fail(upsertion.name, .unacceptableCredential, "Too many iterations (maximum \(ScramMechanism.maxIterations))"); continue
            }
            let salt = Array(upsertion.salt.readableBytesView)
            let salted = Array(upsertion.saltedPassword.readableBytesView)
            guard !salt.isEmpty, salted.count == mechanism.keyLength else {
                fail(upsertion.name, .unacceptableCredential, "The salt must not be empty and the salted password must be \(mechanism.keyLength) bytes")
                continue
            }
            let credential = ScramCredential(mechanism: mechanism, saltedPassword: salted, salt: salt, iterations: upsertion.iterations)
            changes.append(ScramCredentialChange(user: upsertion.name, mechanism: mechanism.name, credential: ScramCredentialRecord(credential)))
        }
        // A user with any refused change keeps all its credentials as they were.
        let accepted = changes.filter { errors[$0.user] == nil }
        var storeError: MetadataError? = nil
        if !accepted.isEmpty {
            do {
                try await metadata.alterScramCredentials(accepted)
            } catch {
                storeError = error
            }
        }
        for user in users {
            var result = AlterUserScramCredentialsResponse.AlterUserScramCredentialsResult()
            result.user = user
            result.errorMessage = nil
            if let (code, message) = errors[user] {
                result.errorCode = code.code
                result.errorMessage = message
            } else if let storeError {
                result.errorCode = storeError.kafkaError.code
                result.errorMessage = storeError.description
            }
            response.results.append(result)
        }
        if !accepted.isEmpty && storeError == nil {
            logger.info("SCRAM credentials changed", metadata: ["users": "\(Set(accepted.map(\.user)).sorted())"])
        }
        return response
    }
}

extension ScramCredential {
    init(_ record: ScramCredentialRecord, _ mechanism: ScramMechanism) {
        self.init(mechanism: mechanism, salt: record.salt, storedKey: record.storedKey, serverKey: record.serverKey,
                  iterations: record.iterations)
    }
}

extension ScramCredentialRecord {
    init(_ credential: ScramCredential) {
        self.init(mechanism: credential.mechanism.name, salt: credential.salt, storedKey: credential.storedKey,
                  serverKey: credential.serverKey, iterations: credential.iterations)
    }
}
