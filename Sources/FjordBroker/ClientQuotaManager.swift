import FjordMetadata
import FjordProtocol
import Synchronization

/// Kafka's `ClientQuotaManager` for the three client quotas Fjord enforces: produce bytes/s,
/// fetch bytes/s and request time (`request_percentage`), per user and client id.
///
/// Which quota applies to a (user, client id) is Kafka's 8-level precedence, most specific first:
/// (user, client), (user, default client), (user), (default user, client), (default user,
/// default client), (default user), (client), (default client). The level that matched decides
/// who shares the measured rate: a user-level quota is shared by all of that user's clients, a
/// client-level one by all users of that client id, and a default gives each user (or client)
/// its own budget.
///
/// Rates are measured as Kafka's `Rate`: a sum over `windowCount` samples of `windowMs` each,
/// divided by the time they span, at least one window (Kafka pads to `windowCount - 1` windows,
/// which allows ten seconds' worth in a burst; measured in `test_quotas.py`, one window holds a
/// flat-out producer to its quota over any 10 s, Kafka's padding does not). A client above its quota is throttled for
/// `(rate − quota) / quota × span` (KIP-219: the broker answers at once with `throttle_time_ms`
/// and then stops reading that connection for that long); request-time throttles are capped at
/// one window, as Kafka's.
///
/// Thread-safe (one mutex over the sensors); sensors idle for an hour are dropped.
final class ClientQuotaManager: Sendable {
    struct Settings: Sendable {
        /// `quota.window.num`
        var windowCount = 11
        /// `quota.window.size.seconds`, in ms.
        var windowMs: Int64 = 1000
    }

    /// Which rate a recording goes to: the key, and the tags of the precedence level that matched.
    struct SensorKey: Hashable, Sendable {
        var key: ClientQuotaKey
        var user: String
        var clientID: String
    }

    /// One windowed sum (Kafka's `SampledStat` with `Rate`).
    struct Sensor: Sendable {
        var samples: [(start: Int64, sum: Double)] = []
        var lastRecordMs: Int64 = 0

        mutating func record(_ value: Double, nowMs: Int64, settings: Settings) {
            purge(nowMs: nowMs, settings: settings)
            if let last = samples.last, nowMs - last.start < settings.windowMs {
                samples[samples.count - 1].sum += value
            } else {
                samples.append((nowMs, value))
            }
            lastRecordMs = nowMs
        }

        mutating func purge(nowMs: Int64, settings: Settings) {
            let span = Int64(settings.windowCount) * settings.windowMs
            samples.removeAll { nowMs - $0.start >= span }
        }

        /// The rate per second and the span (ms) it is measured over.
        func rate(nowMs: Int64, settings: Settings) -> (perSecond: Double, spanMs: Int64) {
            let total = samples.reduce(0) { $0 + $1.sum }
            var span = nowMs - (samples.first?.start ?? nowMs)
            // At least one whole window (Kafka pads to windowCount − 1 windows, which lets a new
            // client send ten seconds' worth at once and a steady one burst again as its first
            // samples expire; one window keeps the rate within its quota over any few seconds).
            span = Swift.max(span, settings.windowMs)
            return (total * 1000 / Double(Swift.max(span, 1)), span)
        }
    }

    private struct State {
        var sensors: [SensorKey: Sensor] = [:]
        var quotasEpoch: Int64 = -1
        var quotas: [ClientQuotaEntity: [String: Double]] = [:]
        var lastExpiryMs: Int64 = 0
    }

    let settings: Settings
    private let state = Mutex(State())

    init(settings: Settings = Settings()) {
        self.settings = settings
    }

    /// The quota for `key` that applies to (`user`, `clientID`) and the sensor it is measured
    /// by, or nil when none applies.
    static func resolve(_ quotas: [ClientQuotaEntity: [String: Double]], _ key: ClientQuotaKey, user: String,
                        clientID: String) -> (limit: Double, sensor: SensorKey)? {
        typealias Name = ClientQuotaEntity.Name
        let levels: [(ClientQuotaEntity, String, String)] = [
            (ClientQuotaEntity(user: .named(user), clientID: .named(clientID)), user, clientID),
            (ClientQuotaEntity(user: .named(user), clientID: .defaultName), user, clientID),
            (ClientQuotaEntity(user: .named(user)), user, ""),
            (ClientQuotaEntity(user: .defaultName, clientID: .named(clientID)), user, clientID),
            (ClientQuotaEntity(user: .defaultName, clientID: .defaultName), user, clientID),
            (ClientQuotaEntity(user: .defaultName), user, ""),
            (ClientQuotaEntity(clientID: .named(clientID)), "", clientID),
            (ClientQuotaEntity(clientID: .defaultName), "", clientID),
        ]
        for (entity, tagUser, tagClient) in levels {
            if let limit = quotas[entity]?[key.rawValue] {
                return (limit, SensorKey(key: key, user: tagUser, clientID: tagClient))
            }
        }
        return nil
    }

    /// Records `value` (bytes, or percent-seconds of request time) for the client and returns
    /// how long to throttle it (ms, 0 when within its quota or without one).
    func record(_ key: ClientQuotaKey, _ value: Double, user: String, clientID: String, image: MetadataImage, nowMs: Int64) -> Int64 {
        guard image.clientQuotas != nil else { return 0 }
        return state.withLock { state in
            refresh(&state, image)
            guard let (limit, sensorKey) = Self.resolve(state.quotas, key, user: user, clientID: clientID) else { return 0 }
            state.sensors[sensorKey, default: Sensor()].record(value, nowMs: nowMs, settings: settings)
            expireIdle(&state, nowMs: nowMs)
            return throttle(state.sensors[sensorKey]!, limit: limit, key: key, nowMs: nowMs)
        }
    }

    /// How long the client would be throttled now for `key`, without recording anything.
    func currentThrottle(_ key: ClientQuotaKey, user: String, clientID: String, image: MetadataImage, nowMs: Int64) -> Int64 {
        guard image.clientQuotas != nil else { return 0 }
        return state.withLock { state in
            refresh(&state, image)
            guard let (limit, sensorKey) = Self.resolve(state.quotas, key, user: user, clientID: clientID),
                var sensor = state.sensors[sensorKey] else { return 0 }
            sensor.purge(nowMs: nowMs, settings: settings)
            return throttle(sensor, limit: limit, key: key, nowMs: nowMs)
        }
    }

    /// The measured rate of a client's sensor for `key` (per second), for tests and metrics.
    func rate(_ key: ClientQuotaKey, user: String, clientID: String, image: MetadataImage, nowMs: Int64) -> Double? {
        state.withLock { state in
            refresh(&state, image)
            guard let (_, sensorKey) = Self.resolve(state.quotas, key, user: user, clientID: clientID),
                var sensor = state.sensors[sensorKey] else { return nil }
            sensor.purge(nowMs: nowMs, settings: settings)
            return sensor.rate(nowMs: nowMs, settings: settings).perSecond
        }
    }

    private func throttle(_ sensor: Sensor, limit: Double, key: ClientQuotaKey, nowMs: Int64) -> Int64 {
        let (rate, span) = sensor.rate(nowMs: nowMs, settings: settings)
        guard rate > limit, limit > 0 else { return 0 }
        let ms = ((rate - limit) / limit * Double(span)).rounded()
        let capped = key == .requestPercentage ? Swift.min(ms, Double(settings.windowMs)) : Swift.min(ms, Double(Int32.max))
        return Int64(capped)
    }

    private func refresh(_ state: inout State, _ image: MetadataImage) {
        guard state.quotasEpoch != image.epoch else { return }
        state.quotasEpoch = image.epoch
        state.quotas = Dictionary((image.clientQuotas ?? []).map { ($0.entity, $0.values) }, uniquingKeysWith: { $1 })
    }

    private func expireIdle(_ state: inout State, nowMs: Int64) {
        guard nowMs - state.lastExpiryMs > 60_000 else { return }
        state.lastExpiryMs = nowMs
        state.sensors = state.sensors.filter { nowMs - $0.value.lastRecordMs < 3_600_000 }
    }
}
