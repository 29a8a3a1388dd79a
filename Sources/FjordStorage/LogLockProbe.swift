#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif
import Synchronization

/// A debug-build probe for the invariant "no fsync under a partition log's lock".
///
/// `LocalLog` marks the thread that holds its lock (a per-thread depth, since one log's critical
/// section never takes another's); every fsync this module makes (`SegmentFile.sync`, an index
/// `msync`, a checkpoint's or directory's fsync) calls `willSync()` first, which counts the fsyncs
/// made while the mark is set. Tests drive every flushing path (flush.messages, rolls with and
/// without a background runner, flush.ms, group commit, truncation, close) and require the count
/// to stay zero. Release builds compile the probe away.
enum LogLockProbe {
    #if DEBUG
    /// fsyncs made while the calling thread held a log's lock, since the process started.
    static let syncsUnderLock = Atomic<Int>(0)
    /// Every fsync this module made, since the process started (so a test can show its paths
    /// did fsync at all).
    static let syncs = Atomic<Int>(0)

    private static let depthKey: pthread_key_t = {
        var key = pthread_key_t()
        pthread_key_create(&key, nil)
        return key
    }()

    private static var depth: Int { Int(bitPattern: pthread_getspecific(depthKey)) }

    static var isHeld: Bool { depth > 0 }

    static func enter() { pthread_setspecific(depthKey, UnsafeRawPointer(bitPattern: depth + 1)) }

    static func exit() { pthread_setspecific(depthKey, UnsafeRawPointer(bitPattern: depth - 1)) }

    static func willSync() {
        syncs.add(1, ordering: .relaxed)
        if isHeld { syncsUnderLock.add(1, ordering: .relaxed) }
    }
    #else
    @inline(__always) static func enter() {}
    @inline(__always) static func exit() {}
    @inline(__always) static func willSync() {}
    #endif
}
