import FjordTesting
import Foundation
import Glibc
import Synchronization

/// A real etcd (Debian's etcd-server, installed by tools/test) on free loopback ports, with its
/// data in a temporary directory; `stop` and `start` keep the data, as a restart does.
final class EtcdServer: Sendable {
    let directory: URL
    let clientPort: Int
    let peerPort: Int
    private let process = Mutex<ChildProcess?>(nil)

    init() throws {
        directory = FileManager.default.temporaryDirectory.appendingPathComponent("fjord-etcd-\(UUID().uuidString)")
        try FileManager.default.createDirectory(at: directory, withIntermediateDirectories: true)
        clientPort = try BrokerProcess.freePort()
        peerPort = try BrokerProcess.freePort()
    }

    func start() async throws {
        let executable = FileManager.default.fileExists(atPath: "/usr/bin/etcd") ? "/usr/bin/etcd" : "/usr/local/bin/etcd"
        let peer = "http://127.0.0.1:\(peerPort)"
        let client = "http://127.0.0.1:\(clientPort)"
        let child = try ChildProcess(executable, ["--name", "fjord-test", "--data-dir", directory.appendingPathComponent("data").path,
                                                  "--listen-client-urls", client, "--advertise-client-urls", client,
                                                  "--listen-peer-urls", peer, "--initial-advertise-peer-urls", peer,
                                                  "--initial-cluster", "fjord-test=\(peer)"],
                                     output: .file(directory.appendingPathComponent("etcd.log").path))
        process.withLock { $0 = child }
        // Ready when the client port accepts connections. The deadline is generous: this starts
        // while every other suite starts too, on two cores (a CI run once saw more than 20 s).
        let deadline = ContinuousClock.now + .seconds(60)
        while ContinuousClock.now < deadline {
            if BrokerProcess.accepts(port: clientPort) { return }
            if let status = child.exitStatus {
                throw ChildProcess.Failure(description: "etcd exited with \(status); its log ends:\n\(logTail())")
            }
            try await Task.sleep(for: .milliseconds(50))
        }
        throw ChildProcess.Failure(description: "etcd did not accept on port \(clientPort) within 60 s; its log ends:\n\(logTail())")
    }

    /// The last lines etcd wrote, for a failure message.
    func logTail(bytes: Int = 3000) -> String {
        guard let data = FileManager.default.contents(atPath: directory.appendingPathComponent("etcd.log").path) else { return "(no log)" }
        return String(decoding: data.suffix(bytes), as: UTF8.self)
    }

    /// Stops etcd with SIGTERM and waits for it to exit.
    func stop() async {
        guard let child = process.withLock({ current in defer { current = nil }; return current }) else { return }
        await child.stop(with: SIGTERM)
    }

    /// Stops etcd and removes its data.
    func remove() async {
        await stop()
        try? FileManager.default.removeItem(at: directory)
    }
}
