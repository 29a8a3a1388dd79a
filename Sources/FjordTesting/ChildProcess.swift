#if canImport(Glibc)
public import Glibc
#elseif canImport(Darwin)
public import Darwin
#endif
import Foundation
import Synchronization

/// A child process for tests that never blocks Swift's cooperative thread pool.
///
/// Swift runs every test, and the actors of an in-process broker, on one cooperative pool as
/// wide as the machine has cores (two in CI). Foundation's `waitUntilExit` or a blocking pipe
/// read parks one of those threads; a test doing so while its child talks to an in-process
/// broker starves the broker, and two such tests at once hang the whole run with every thread
/// idle (no time limit can fire: its timer needs a pool thread too). `ChildProcess` therefore
/// waits for the exit and reads the output on threads of its own and hands the results back
/// through continuations.
///
/// Guarantees:
/// - the child is spawned with the default signal mask and dispositions (the spawning pool
///   thread may block signals a child must see, such as SIGTERM), and inherits no descriptor
///   but its standard input, output and error, so a pipe's end cannot leak into a sibling and
///   delay its reader's end of file;
/// - `signal` never reaches another process that reused the pid: the exit is observed with
///   `waitid(WNOWAIT)`, marked under the lock `signal` takes, and only then reaped.
public final class ChildProcess: Sendable {
    /// Where the child's standard output and error go.
    public enum Output: Sendable {
        /// Both to /dev/null.
        case discard
        /// Both appended to this file (created when missing).
        case file(String)
        /// Standard output into a pipe, read line by line through `lines`; standard error to
        /// the test's own.
        case lines
        /// Standard output and error into one pipe, read line by line through `lines`.
        case linesWithErrors
    }

    public struct Failure: Error, CustomStringConvertible {
        public let description: String
        public init(description: String) { self.description = description }
    }

    /// The child's process id (valid until `waitForExit` returned).
    public let pid: pid_t
    private let state = Mutex(State())
    /// The child's output lines when spawned with `.lines`; finishes at end of file.
    public let lines: AsyncStream<String>

    private struct State {
        var status: Int32? = nil
        var waiters: [CheckedContinuation<Int32, Never>] = []
    }

    /// Spawns `executable` (a path) with `arguments`; `environment` entries are added to this
    /// process's environment. With `.lines` output, `signalWhen` (a signal and a predicate) is
    /// checked on the reader thread for every line, and the signal sent at the first match: a
    /// kill that lands the moment the child reports something, whatever the test's own task is
    /// waiting for (a busy cooperative pool can delay that task by seconds).
    public convenience init(_ executable: String, _ arguments: [String], output: Output = .discard, environment: [String: String] = [:],
                            signalWhen: (signal: Int32, line: @Sendable (String) -> Bool)? = nil) throws {
        var actions = posix_spawn_file_actions_t()
        posix_spawn_file_actions_init(&actions)
        defer { posix_spawn_file_actions_destroy(&actions) }
        var readEnd: Int32 = -1
        posix_spawn_file_actions_addopen(&actions, 0, "/dev/null", O_RDONLY, 0)
        switch output {
        case .discard:
            posix_spawn_file_actions_addopen(&actions, 1, "/dev/null", O_WRONLY, 0)
        case .file(let path):
            posix_spawn_file_actions_addopen(&actions, 1, path, O_WRONLY | O_CREAT | O_APPEND, 0o644)
        case .lines, .linesWithErrors:
            var ends: [Int32] = [-1, -1]
            guard GNUExtensions.pipe2(&ends, O_CLOEXEC) == 0 else { throw Failure(description: "pipe: \(String(cString: strerror(errno)))") }
            readEnd = ends[0]
            posix_spawn_file_actions_adddup2(&actions, ends[1], 1)
            if case .linesWithErrors = output { posix_spawn_file_actions_adddup2(&actions, ends[1], 2) }
            posix_spawn_file_actions_addclose(&actions, ends[1])
            defer { close(ends[1]) }
            try self.init(spawning: executable, arguments, environment: environment, actions: &actions, readEnd: readEnd,
                          signalWhen: signalWhen)
            return
        }
        posix_spawn_file_actions_adddup2(&actions, 1, 2)
        try self.init(spawning: executable, arguments, environment: environment, actions: &actions, readEnd: readEnd, signalWhen: nil)
    }

    private init(spawning executable: String, _ arguments: [String], environment: [String: String],
                 actions: inout posix_spawn_file_actions_t, readEnd: Int32,
                 signalWhen: (signal: Int32, line: @Sendable (String) -> Bool)?) throws {
        GNUExtensions.closeFrom(3, in: &actions)
        var attributes = posix_spawnattr_t()
        posix_spawnattr_init(&attributes)
        defer { posix_spawnattr_destroy(&attributes) }
        var noSignals = sigset_t()
        sigemptyset(&noSignals)
        posix_spawnattr_setsigmask(&attributes, &noSignals)
        var allSignals = sigset_t()
        sigfillset(&allSignals)
        posix_spawnattr_setsigdefault(&attributes, &allSignals)
        posix_spawnattr_setflags(&attributes, Int16(POSIX_SPAWN_SETSIGMASK | POSIX_SPAWN_SETSIGDEF))

        var variables = ProcessInfo.processInfo.environment
        for (key, value) in environment { variables[key] = value }
        let argv: [UnsafeMutablePointer<CChar>?] = ([executable] + arguments).map { strdup($0) } + [nil]
        let envp: [UnsafeMutablePointer<CChar>?] = variables.map { strdup("\($0.key)=\($0.value)") } + [nil]
        defer { for pointer in argv + envp { free(pointer) } }
        var pid: pid_t = 0
        let spawned = posix_spawn(&pid, executable, &actions, &attributes, argv, envp)
        guard spawned == 0 else {
            if readEnd >= 0 { close(readEnd) }
            throw Failure(description: "cannot run \(executable): \(String(cString: strerror(spawned)))")
        }
        self.pid = pid
        var continuation: AsyncStream<String>.Continuation! = nil
        lines = AsyncStream { continuation = $0 }
        if readEnd >= 0 {
            let sink = continuation!
            Thread { [self] in
                var fired = false
                Self.readLines(from: readEnd) { line in
                    if !fired, let (number, matches) = signalWhen, matches(line) {
                        fired = true
                        signal(number)
                    }
                    sink.yield(line)
                }
                sink.finish()
            }.start()
        } else {
            continuation.finish()
        }
        Thread { [self] in reap() }.start()
    }

    /// Sends `number` to the child unless it has exited.
    public func signal(_ number: Int32) {
        state.withLock { state in
            if state.status == nil { _ = kill(pid, number) }
        }
    }

    /// The child's exit: its exit code, or 128 + the signal that ended it; nil while it runs.
    public var exitStatus: Int32? { state.withLock { $0.status } }

    /// Waits, off the cooperative pool, until the child exits; returns `exitStatus`.
    @discardableResult
    public func waitForExit() async -> Int32 {
        await withCheckedContinuation { continuation in
            let status: Int32? = state.withLock { state in
                if state.status == nil { state.waiters.append(continuation) }
                return state.status
            }
            if let status { continuation.resume(returning: status) }
        }
    }

    /// Sends `number` and waits for the exit.
    @discardableResult
    public func stop(with number: Int32 = SIGTERM) async -> Int32 {
        signal(number)
        return await waitForExit()
    }

    /// Runs a program to its end and returns its exit status and standard output (and standard
    /// error with `includingErrors`).
    public static func run(_ executable: String, _ arguments: [String], includingErrors: Bool = false,
                           environment: [String: String] = [:]) async throws -> (status: Int32, output: String) {
        let child = try ChildProcess(executable, arguments, output: includingErrors ? .linesWithErrors : .lines, environment: environment)
        var output: [String] = []
        for await line in child.lines { output.append(line) }
        return (await child.waitForExit(), output.joined(separator: "\n"))
    }

    /// The waiter thread: observes the exit without reaping, publishes it, then reaps.
    private func reap() {
        var info = siginfo_t()
        while waitid(P_PID, id_t(pid), &info, WEXITED | WNOWAIT) < 0 && errno == EINTR {}
        let status: Int32
        #if canImport(Glibc)
        let code = info._sifields._sigchld.si_status
        #else
        let code = info.si_status
        #endif
        status = info.si_code == CLD_EXITED ? code : 128 + code
        let waiters = state.withLock { state in
            state.status = status
            defer { state.waiters = [] }
            return state.waiters
        }
        var ignored: Int32 = 0
        while waitpid(pid, &ignored, 0) < 0 && errno == EINTR {}
        for waiter in waiters { waiter.resume(returning: status) }
    }

    /// The reader thread of `.lines`: hands over each line (without its newline) until end of file.
    private static func readLines(from fd: Int32, _ deliver: (String) -> Void) {
        defer { close(fd) }
        var pending: [UInt8] = []
        var buffer = [UInt8](repeating: 0, count: 64 * 1024)
        while true {
            let count = buffer.withUnsafeMutableBytes { read(fd, $0.baseAddress, $0.count) }
            if count < 0 && errno == EINTR { continue }
            if count <= 0 { break }
            pending.append(contentsOf: buffer[..<count])
            var start = 0
            while let newline = pending[start...].firstIndex(of: 10) {
                deliver(String(decoding: pending[start..<newline], as: UTF8.self))
                start = newline + 1
            }
            pending.removeFirst(start)
        }
        if !pending.isEmpty { deliver(String(decoding: pending, as: UTF8.self)) }
    }
}

/// glibc functions Swift's Glibc module leaves out (they need `_GNU_SOURCE`), looked up by name.
private enum GNUExtensions {
    private typealias Pipe2 = @convention(c) (UnsafeMutablePointer<Int32>, Int32) -> Int32
    private typealias AddCloseFrom = @convention(c) (UnsafeMutablePointer<posix_spawn_file_actions_t>, Int32) -> Int32

    private static func symbol<T>(_ name: String, as type: T.Type) -> T? {
        guard let address = dlsym(UnsafeMutableRawPointer(bitPattern: 0), name) else { return nil }  // RTLD_DEFAULT
        return unsafeBitCast(address, to: type)
    }

    /// `pipe2(2)`: both ends created close-on-exec, atomically (no other thread's spawn can
    /// inherit them in between).
    static func pipe2(_ ends: inout [Int32], _ flags: Int32) -> Int32 {
        guard let function = symbol("pipe2", as: Pipe2.self) else { return -1 }
        return ends.withUnsafeMutableBufferPointer { function($0.baseAddress!, flags) }
    }

    /// Closes every descriptor from `lowest` up in the child: `posix_spawn_file_actions_addclosefrom_np`
    /// (glibc 2.34), else a close action per descriptor open now.
    static func closeFrom(_ lowest: Int32, in actions: inout posix_spawn_file_actions_t) {
        if let function = symbol("posix_spawn_file_actions_addclosefrom_np", as: AddCloseFrom.self) {
            _ = function(&actions, lowest)
            return
        }
        for name in (try? FileManager.default.contentsOfDirectory(atPath: "/proc/self/fd")) ?? [] {
            if let fd = Int32(name), fd >= lowest { posix_spawn_file_actions_addclose(&actions, fd) }
        }
    }
}
