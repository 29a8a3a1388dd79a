// Listeners' security protocols and TLS settings, read as Kafka reads them.

public import FjordMetadata

extension BrokerConfig {
    /// This broker as the cluster (or the single node's image) records it: the first
    /// listener's advertised address, and every listener's.
    public var registration: BrokerRegistration {
        let first = advertised
        return BrokerRegistration(nodeID: nodeID, host: first.host, port: Int32(first.port), rack: rack,
                                  endpoints: advertisedEndpoints.map { BrokerEndpoint(listener: $0.name, host: $0.host, port: Int32($0.port)) })
    }

    /// The `ssl.*` keys a TLS listener reads; each may also be given per listener as
    /// `listener.name.<name lowercased>.<key>`.
    static let sslKeys: Set<String> = [
        "ssl.keystore.type", "ssl.keystore.location", "ssl.keystore.password", "ssl.key.password",
        "ssl.keystore.key", "ssl.keystore.certificate.chain",
        "ssl.truststore.type", "ssl.truststore.location", "ssl.truststore.password", "ssl.truststore.certificates",
        "ssl.client.auth", "ssl.enabled.protocols", "ssl.cipher.suites",
        // Accepted without effect: the JVM's names for what OpenSSL chooses itself.
        "ssl.protocol", "ssl.provider", "ssl.keymanager.algorithm", "ssl.trustmanager.algorithm",
        "ssl.secure.random.implementation", "ssl.endpoint.identification.algorithm", "ssl.principal.mapping.rules",
        "ssl.engine.factory.class",
    ]

    /// The SASL mechanisms Fjord serves.
    public static let supportedSASLMechanisms = ["PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512"]

    static func isSASLKey(_ key: String) -> Bool {
        if key == "sasl.enabled.mechanisms" || key == "sasl.mechanism.inter.broker.protocol" || key == "sasl.jaas.config" { return true }
        return key.hasPrefix("listener.name.") && (key.hasSuffix(".sasl.enabled.mechanisms") || key.hasSuffix(".sasl.jaas.config"))
    }

    static func isSSLKey(_ key: String) -> Bool {
        if sslKeys.contains(key) { return true }
        guard key.hasPrefix("listener.name.") else { return false }
        let rest = key.dropFirst("listener.name.".count)
        guard let dot = rest.firstIndex(of: ".") else { return false }
        return sslKeys.contains(String(rest[rest.index(after: dot)...]))
    }

    /// `NAME:PROTOCOL,…` with Kafka's protocol names.
    static func securityProtocolMap(_ key: String, _ value: String) throws(ConfigError) -> [String: SecurityProtocol] {
        var map: [String: SecurityProtocol] = [:]
        for entry in value.split(separator: ",") where !entry.trimmingCharacters().isEmpty {
            let parts = entry.split(separator: ":", maxSplits: 1).map { $0.trimmingCharacters() }
            guard parts.count == 2, !parts[0].isEmpty, let proto = SecurityProtocol(rawValue: parts[1].uppercased()) else {
                throw ConfigError("\(key): '\(entry)': expected NAME:PROTOCOL with PROTOCOL one of "
                    + SecurityProtocol.allCases.map(\.rawValue).joined(separator: ", "))
            }
            map[parts[0]] = proto
        }
        guard !map.isEmpty else { throw ConfigError("\(key): expected at least one NAME:PROTOCOL") }
        return map
    }

    /// Gives each listener its security protocol and each TLS listener its settings, once every
    /// key is read; refuses a listener whose name the map does not know, as Kafka does.
    mutating func resolveListeners(_ values: [String: String]) throws(ConfigError) {
        var names = Set<String>()
        for index in listeners.indices {
            let name = listeners[index].name
            guard names.insert(name).inserted else { throw ConfigError("listeners: the listener name \(name) is used twice") }
            guard let proto = listenerSecurityProtocolMap[name] else {
                throw ConfigError("listeners: no security protocol defined for listener \(name) (add it to listener.security.protocol.map)")
            }
            listeners[index].securityProtocol = proto
            if proto.usesTLS { ssl[name] = try Self.sslSettings(for: name, values) }
            if proto.usesSASL { saslEnabledMechanisms[name] = try Self.saslMechanisms(for: name, values) }
        }
        if let advertised = advertisedListeners {
            for index in advertised.indices {
                let name = advertised[index].name
                guard let listener = listeners.first(where: { $0.name == name }) else {
                    throw ConfigError("advertised.listeners: \(name) is not one of listeners (\(listeners.map(\.name).joined(separator: ",")))")
                }
                advertisedListeners?[index].securityProtocol = listener.securityProtocol
            }
        }
        if let inter = interBrokerListenerName, !listeners.contains(where: { $0.name == inter }) {
            throw ConfigError("inter.broker.listener.name: \(inter) is not one of listeners (\(listeners.map(\.name).joined(separator: ",")))")
        }
    }

    /// A SASL listener's mechanisms: `listener.name.<name>.sasl.enabled.mechanisms` over
    /// `sasl.enabled.mechanisms`; a mechanism Fjord does not serve (GSSAPI, OAUTHBEARER)
    /// refuses to start rather than leave clients failing at login.
    static func saslMechanisms(for listener: String, _ values: [String: String]) throws(ConfigError) -> [String] {
        let prefixed = "listener.name.\(listener.lowercased()).sasl.enabled.mechanisms"
        let (key, text) = values[prefixed].map { (prefixed, $0) } ?? ("sasl.enabled.mechanisms", values["sasl.enabled.mechanisms"] ?? "")
        guard !text.trimmingCharacters().isEmpty else { return ["SCRAM-SHA-256", "SCRAM-SHA-512"] }
        let mechanisms = text.split(separator: ",").map { $0.trimmingCharacters().uppercased() }.filter { !$0.isEmpty }
        for mechanism in mechanisms where !supportedSASLMechanisms.contains(mechanism) {
            throw ConfigError("\(key)=\(text): \(mechanism) is not supported (Fjord serves \(supportedSASLMechanisms.joined(separator: ", ")))")
        }
        return mechanisms
    }

    /// A TLS listener's settings: `listener.name.<name>.ssl.X` over `ssl.X`.
    static func sslSettings(for listener: String, _ values: [String: String]) throws(ConfigError) -> SSLSettings {
        func value(_ key: String) -> (key: String, value: String)? {
            let prefixed = "listener.name.\(listener.lowercased()).\(key)"
            if let v = values[prefixed], !v.isEmpty { return (prefixed, v) }
            if let v = values[key], !v.isEmpty { return (key, v) }
            return nil
        }
        func storeType(_ key: String) throws(ConfigError) -> SSLSettings.StoreType {
            guard let (name, text) = value(key) else { return .pem }
            guard let type = SSLSettings.StoreType(rawValue: text.uppercased()) else {
                throw ConfigError("\(name)=\(text): Fjord reads PEM or PKCS12 stores")
            }
            return type
        }
        var settings = SSLSettings()
        settings.keystoreType = try storeType("ssl.keystore.type")
        settings.keystoreLocation = value("ssl.keystore.location")?.value
        settings.keystorePassword = value("ssl.keystore.password")?.value
        settings.keyPassword = value("ssl.key.password")?.value
        settings.keystoreKey = value("ssl.keystore.key")?.value
        settings.keystoreCertificateChain = value("ssl.keystore.certificate.chain")?.value
        settings.truststoreType = try storeType("ssl.truststore.type")
        settings.truststoreLocation = value("ssl.truststore.location")?.value
        settings.truststorePassword = value("ssl.truststore.password")?.value
        settings.truststoreCertificates = value("ssl.truststore.certificates")?.value
        if let (key, text) = value("ssl.client.auth") {
            guard let auth = SSLClientAuth(rawValue: text.lowercased()) else {
                throw ConfigError("\(key)=\(text): expected none, requested or required")
            }
            settings.clientAuth = auth
        }
        if let (key, text) = value("ssl.enabled.protocols") {
            let protocols = text.split(separator: ",").map { $0.trimmingCharacters() }.filter { !$0.isEmpty }
            for name in protocols where !["TLSv1.2", "TLSv1.3"].contains(name) {
                throw ConfigError("\(key)=\(text): \(name) is not supported (TLSv1.2 and TLSv1.3 are)")
            }
            guard !protocols.isEmpty else { throw ConfigError("\(key): expected at least one of TLSv1.2, TLSv1.3") }
            settings.enabledProtocols = protocols
        }
        if let (_, text) = value("ssl.cipher.suites") {
            settings.cipherSuites = text.split(separator: ",").map { $0.trimmingCharacters() }.filter { !$0.isEmpty }
        }
        let hasInline = settings.keystoreKey != nil || settings.keystoreCertificateChain != nil
        guard settings.keystoreLocation != nil || hasInline else {
            throw ConfigError("listener \(listener) uses TLS but has no certificate: set ssl.keystore.location "
                + "(or listener.name.\(listener.lowercased()).ssl.keystore.location)")
        }
        if hasInline && (settings.keystoreKey == nil || settings.keystoreCertificateChain == nil) {
            throw ConfigError("listener \(listener): ssl.keystore.key and ssl.keystore.certificate.chain go together")
        }
        if settings.clientAuth != .none && settings.truststoreLocation == nil && settings.truststoreCertificates == nil {
            throw ConfigError("listener \(listener): ssl.client.auth=\(settings.clientAuth.rawValue) needs ssl.truststore.location")
        }
        return settings
    }
}
