import NIOCore

/// The key → latest offset map of one cleaning pass (Kafka's `SkimpyOffsetMap`), bounded by
/// `log.cleaner.dedupe.buffer.size`. It keeps whole keys, not digests, so no two keys can be
/// confused; each entry is charged its key length plus `entryOverhead` bytes against the budget.
/// `put` refuses a new key once the budget is spent (it always takes the first one).
struct OffsetMap {
    /// Bytes charged per entry besides the key: the array header, the offset and the table slot.
    static let entryOverhead = 64
    private(set) var entries: [[UInt8]: Int64] = [:]
    private(set) var bytes = 0
    let budget: Int

    init(budget: Int) {
        self.budget = budget
    }

    /// Records `offset` as `key`'s latest; false (and nothing changed) when a new key would
    /// exceed the budget.
    mutating func put(_ key: ByteBuffer, offset: Int64) -> Bool {
        let bytes = Array(key.readableBytesView)
        if entries[bytes] != nil {
            entries[bytes] = offset
            return true
        }
        let cost = bytes.count + Self.entryOverhead
        guard entries.isEmpty || self.bytes + cost <= budget else { return false }
        entries[bytes] = offset
        self.bytes += cost
        return true
    }

    func latest(_ key: ByteBuffer) -> Int64? {
        entries[Array(key.readableBytesView)]
    }

    var count: Int { entries.count }
}
