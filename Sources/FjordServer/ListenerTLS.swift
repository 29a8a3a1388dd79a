import FjordBroker
import NIOSSL
import Synchronization

/// The TLS context of one SSL or SASL_SSL listener, built from its Kafka `ssl.*` settings.
///
/// Guarantees: a listener starts only with a context that loaded (a missing or unreadable
/// certificate refuses to start, naming the file); `reload()` (SIGHUP) swaps in a context
/// built from the files as they are now, for connections accepted from then on, and keeps
/// the old one when the new files do not load, so a bad renewal never takes a listener down.
final class ListenerTLS: Sendable {
    let listenerName: String
    let settings: SSLSettings
    private let current: Mutex<NIOSSLContext>

    init(listenerName: String, settings: SSLSettings) throws(ConfigError) {
        self.listenerName = listenerName
        self.settings = settings
        self.current = Mutex(try Self.makeContext(listenerName, settings))
    }

    /// The context for a connection accepted now.
    var context: NIOSSLContext { current.withLock { $0 } }

    /// Rebuilds the context from the settings' files; on failure the old context stays.
    func reload() throws(ConfigError) {
        let fresh = try Self.makeContext(listenerName, settings)
        current.withLock { $0 = fresh }
    }

    static func makeContext(_ listener: String, _ settings: SSLSettings) throws(ConfigError) -> NIOSSLContext {
        func failing<T>(_ what: String, _ body: () throws -> T) throws(ConfigError) -> T {
            do {
                return try body()
            } catch {
                throw ConfigError("listener \(listener): cannot load \(what): \(error)")
            }
        }
        let chain: [NIOSSLCertificate]
        let key: NIOSSLPrivateKey
        switch (settings.keystoreType, settings.keystoreLocation) {
        case (.pkcs12, let location?):
            let bundle = try failing("the PKCS12 keystore \(location)") {
                try NIOSSLPKCS12Bundle(file: location, passphrase: settings.keystorePassword.map { Array($0.utf8) })
            }
            (chain, key) = (bundle.certificateChain, bundle.privateKey)
        case (.pem, let location?):
            chain = try failing("the certificate chain in \(location)") { try NIOSSLCertificate.fromPEMFile(location) }
            key = try failing("the private key in \(location)") {
                if let password = settings.keyPassword {
                    return try NIOSSLPrivateKey(file: location, format: .pem) { setter in setter(Array(password.utf8)) }
                }
                return try NIOSSLPrivateKey(file: location, format: .pem)
            }
        default:
            let chainText = settings.keystoreCertificateChain ?? ""
            let keyText = settings.keystoreKey ?? ""
            chain = try failing("ssl.keystore.certificate.chain") { try NIOSSLCertificate.fromPEMBytes(Array(chainText.utf8)) }
            key = try failing("ssl.keystore.key") {
                if let password = settings.keyPassword {
                    return try NIOSSLPrivateKey(bytes: Array(keyText.utf8), format: .pem) { setter in setter(Array(password.utf8)) }
                }
                return try NIOSSLPrivateKey(bytes: Array(keyText.utf8), format: .pem)
            }
        }
        guard !chain.isEmpty else { throw ConfigError("listener \(listener): the keystore holds no certificate") }

        var configuration = TLSConfiguration.makeServerConfiguration(certificateChain: chain.map { .certificate($0) },
                                                                     privateKey: .privateKey(key))
        configuration.minimumTLSVersion = settings.enabledProtocols.contains("TLSv1.2") ? .tlsv12 : .tlsv13
        configuration.maximumTLSVersion = settings.enabledProtocols.contains("TLSv1.3") ? .tlsv13 : .tlsv12
        if !settings.cipherSuites.isEmpty { configuration.cipherSuites = settings.cipherSuites.joined(separator: ":") }
        switch settings.clientAuth {
        case .none: configuration.certificateVerification = .none
        case .requested: configuration.certificateVerification = .optionalVerification
        case .required: configuration.certificateVerification = .noHostnameVerification
        }
        if settings.clientAuth != .none {
            if let inline = settings.truststoreCertificates {
                let roots = try failing("ssl.truststore.certificates") { try NIOSSLCertificate.fromPEMBytes(Array(inline.utf8)) }
                configuration.trustRoots = .certificates(roots)
            } else if let location = settings.truststoreLocation {
                switch settings.truststoreType {
                case .pem:
                    let roots = try failing("the truststore \(location)") { try NIOSSLCertificate.fromPEMFile(location) }
                    configuration.trustRoots = .certificates(roots)
                case .pkcs12:
                    let bundle = try failing("the PKCS12 truststore \(location)") {
                        try NIOSSLPKCS12Bundle(file: location, passphrase: settings.truststorePassword.map { Array($0.utf8) })
                    }
                    configuration.trustRoots = .certificates(bundle.certificateChain)
                }
            }
        }
        return try failing("the TLS context") { try NIOSSLContext(configuration: configuration) }
    }
}
