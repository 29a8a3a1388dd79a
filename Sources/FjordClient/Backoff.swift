/// Kafka's `ExponentialBackoff`: `base * 2^attempts`, capped at `max`, with ±20 % jitter so a
/// fleet of clients that lost the same broker does not reconnect in lockstep.
///
/// A value type: the owner stores `attempts` next to what is being retried (one per broker
/// connection, one per request) and resets it on success.
public struct ExponentialBackoff: Sendable, Equatable {
    public var baseMs: Int
    public var maxMs: Int
    public var jitter: Double = 0.2
    /// Consecutive failures so far.
    public private(set) var attempts = 0

    public init(baseMs: Int, maxMs: Int) {
        self.baseMs = Swift.max(0, baseMs)
        self.maxMs = Swift.max(self.baseMs, maxMs)
    }

    /// The delay before the next attempt, in milliseconds, given the failures so far.
    public func delayMs() -> Int {
        guard attempts > 0, baseMs > 0 else { return 0 }
        let exponent = Swift.min(attempts - 1, 30)
        let raw = Swift.min(Double(maxMs), Double(baseMs) * Double(1 << exponent))
        let factor = 1 + Double.random(in: -jitter...jitter)
        return Swift.max(0, Int((raw * factor).rounded()))
    }

    public mutating func recordFailure() { attempts += 1 }
    public mutating func reset() { attempts = 0 }
}
