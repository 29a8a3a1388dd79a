public import FjordSecurity
import FjordProtocol
import NIOCore

// SASL/SCRAM users (Kafka's Admin.describeUserScramCredentials / alterUserScramCredentials).
// The password never leaves the client: it sends the salt, the iteration count and the salted
// password (PBKDF2), from which the broker derives what it stores.

extension KafkaAdmin {
    /// One SCRAM credential of a user, as DescribeUserScramCredentials tells it.
    public struct ScramCredentialInfo: Sendable, Equatable {
        public var mechanism: ScramMechanism
        public var iterations: Int32
    }

    /// Every user's credentials (`users` nil), or the named users'; an unknown named user
    /// throws RESOURCE_NOT_FOUND.
    public func describeUserScramCredentials(_ users: [String]? = nil) async throws -> [String: [ScramCredentialInfo]] {
        var request = DescribeUserScramCredentialsRequest()
        request.users = users?.map { name in
            var user = DescribeUserScramCredentialsRequest.UserName()
            user.name = name
            return user
        }
        let response = try await cluster.anyConnection().send(request)
        if response.errorCode != 0 { throw ClientError.kafka(KafkaError(code: response.errorCode), response.errorMessage) }
        var out: [String: [ScramCredentialInfo]] = [:]
        for result in response.results {
            if result.errorCode != 0 { throw ClientError.kafka(KafkaError(code: result.errorCode), result.errorMessage) }
            out[result.user] = result.credentialInfos.compactMap { info in
                ScramMechanism(rawValue: info.mechanism).map { ScramCredentialInfo(mechanism: $0, iterations: info.iterations) }
            }
        }
        return out
    }

    /// Creates or replaces `user`'s credential for `mechanism`.
    public func upsertUserScramCredential(user: String, password: String, mechanism: ScramMechanism = .sha512,
                                          iterations: Int32 = ScramMechanism.minIterations) async throws {
        var upsertion = AlterUserScramCredentialsRequest.ScramCredentialUpsertion()
        upsertion.name = user
        upsertion.mechanism = mechanism.rawValue
        upsertion.iterations = iterations
        let salt = (0..<32).map { _ in UInt8.random(in: 0...255) }
        upsertion.salt = ByteBuffer(bytes: salt)
        upsertion.saltedPassword = ByteBuffer(bytes: mechanism.saltedPassword(password, salt: salt, iterations: iterations))
        var request = AlterUserScramCredentialsRequest()
        request.upsertions = [upsertion]
        try await alter(request)
    }

    /// Deletes `user`'s credential for `mechanism`.
    public func deleteUserScramCredential(user: String, mechanism: ScramMechanism) async throws {
        var deletion = AlterUserScramCredentialsRequest.ScramCredentialDeletion()
        deletion.name = user
        deletion.mechanism = mechanism.rawValue
        var request = AlterUserScramCredentialsRequest()
        request.deletions = [deletion]
        try await alter(request)
    }

    private func alter(_ request: AlterUserScramCredentialsRequest) async throws {
        let response = try await cluster.anyConnection().send(request)
        for result in response.results where result.errorCode != 0 {
            throw ClientError.kafka(KafkaError(code: result.errorCode), result.errorMessage ?? result.user)
        }
    }
}
