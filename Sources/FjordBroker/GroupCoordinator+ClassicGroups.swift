import FjordMetadata
import FjordProtocol
import Foundation
import Logging
import NIOCore

/// The classic group protocol (JoinGroup, SyncGroup, Heartbeat, LeaveGroup) of
/// `GroupCoordinator`: members, rebalances and the group metadata record.
extension GroupCoordinator {
    enum GroupState: String {
        case empty = "Empty"
        case preparingRebalance = "PreparingRebalance"
        case completingRebalance = "CompletingRebalance"
        case stable = "Stable"
        case dead = "Dead"
    }

    struct Member {
        var memberID: String
        var instanceID: String?
        var clientID: String
        var clientHost: String
        var rebalanceTimeoutMs: Int32
        var sessionTimeoutMs: Int32
        var protocolType: String
        var protocols: [(name: String, metadata: ByteBuffer)]
        var assignment = ByteBuffer()
        var joinWaiter: CheckedContinuation<JoinGroupResponse, Never>? = nil
        var syncWaiter: CheckedContinuation<SyncGroupResponse, Never>? = nil
        var lastHeartbeatMs: Int64

        func metadata(for protocolName: String?) -> ByteBuffer {
            protocols.first { $0.name == protocolName }?.metadata ?? ByteBuffer()
        }
    }

    final class Group {
        let id: String
        var state: GroupState = .empty
        var generation: Int32 = 0
        var protocolType: String? = nil
        var protocolName: String? = nil
        var leader: String? = nil
        var members: [String: Member] = [:]
        var joinOrder: [String] = []
        /// Member ids handed out with MEMBER_ID_REQUIRED (KIP-394), with when they expire unjoined.
        var pendingMembers: [String: Int64] = [:]
        var staticMembers: [String: String] = [:]
        var offsets: [TopicPartition: CommittedOffset] = [:]
        var rebalanceRound = 0
        var stateTimestamp: Int64 = 0

        init(id: String) { self.id = id }
    }

    // MARK: Group metadata records

    static func groupKey(_ group: String) throws(CoordinatorRecordError) -> ByteBuffer {
        try CoordinatorRecordSerde.groupMetadataKey(group: group)
    }

    func groupValue(_ group: Group) throws(CoordinatorRecordError) -> ByteBuffer {
        var value = GroupMetadataValue()
        value.protocolType = group.protocolType ?? ""
        value.generation = group.generation
        value.protocol = group.protocolName
        value.leader = group.leader
        value.currentStateTimestamp = group.stateTimestamp
        for id in group.joinOrder {
            guard let member = group.members[id] else { continue }
            var entry = GroupMetadataValue.MemberMetadata()
            entry.memberId = member.memberID
            entry.groupInstanceId = member.instanceID
            entry.clientId = member.clientID
            entry.clientHost = member.clientHost
            entry.rebalanceTimeout = member.rebalanceTimeoutMs
            entry.sessionTimeout = member.sessionTimeoutMs
            entry.subscription = member.metadata(for: group.protocolName)
            entry.assignment = member.assignment
            value.members.append(entry)
        }
        return try CoordinatorRecordSerde.groupMetadataValue(value, group: group.id)
    }

    func persistGroup(_ group: Group) {
        do {
            try append([(Self.groupKey(group.id), groupValue(group))], group: group.id)
        } catch {
            logger.error("cannot persist group metadata", metadata: ["group": "\(group.id)", "error": "\(error)"])
        }
    }

    /// Replays a GroupMetadataValue: the group's generation, protocol and members as of that
    /// record (its offsets are kept); a tombstone deletes the group.
    func replayGroupMetadata(_ groupID: String, _ value: GroupMetadataValue?) {
        guard let v = value else {
            groups[groupID] = nil
            return
        }
        let group = groups[groupID] ?? Group(id: groupID)
        groups[groupID] = group
        group.generation = v.generation
        group.protocolType = v.protocolType.isEmpty ? nil : v.protocolType
        group.protocolName = v.protocol
        group.leader = v.leader
        group.members = [:]
        group.joinOrder = []
        group.staticMembers = [:]
        let now = clock()
        for m in v.members {
            var member = Member(memberID: m.memberId, instanceID: m.groupInstanceId, clientID: m.clientId, clientHost: m.clientHost,
                                rebalanceTimeoutMs: m.rebalanceTimeout, sessionTimeoutMs: m.sessionTimeout,
                                protocolType: v.protocolType, protocols: [(v.protocol ?? "", m.subscription)], lastHeartbeatMs: now)
            member.assignment = m.assignment
            group.members[m.memberId] = member
            group.joinOrder.append(m.memberId)
            if let instance = m.groupInstanceId { group.staticMembers[instance] = m.memberId }
        }
        group.state = group.members.isEmpty ? .empty : .stable
    }

    // MARK: Membership helpers

    func removeMember(_ group: Group, _ id: String) {
        guard let member = group.members.removeValue(forKey: id) else { return }
        group.joinOrder.removeAll { $0 == id }
        if let instance = member.instanceID, group.staticMembers[instance] == id { group.staticMembers[instance] = nil }
        if let waiter = member.joinWaiter {
            var response = JoinGroupResponse()
            response.errorCode = KafkaError.unknownMemberId.code
            response.generationId = -1
            response.memberId = id
            waiter.resume(returning: response)
        }
        if let waiter = member.syncWaiter {
            var response = SyncGroupResponse()
            response.errorCode = KafkaError.rebalanceInProgress.code
            waiter.resume(returning: response)
        }
        if group.leader == id { group.leader = group.joinOrder.first }
    }

    /// After members left or expired: rebalance, or finish a rebalance already waiting on them.
    func membersChanged(_ group: Group) {
        switch group.state {
        case .stable, .completingRebalance:
            prepareRebalance(group)
        case .preparingRebalance:
            maybeCompleteJoin(group)
        case .empty, .dead:
            if group.members.isEmpty { group.state = .empty }
        }
    }

    func prepareRebalance(_ group: Group) {
        // Members waiting in SyncGroup must rejoin.
        for id in group.joinOrder {
            if let waiter = group.members[id]?.syncWaiter {
                group.members[id]?.syncWaiter = nil
                var response = SyncGroupResponse()
                response.errorCode = KafkaError.rebalanceInProgress.code
                waiter.resume(returning: response)
            }
        }
        let wasEmpty = group.state == .empty
        group.state = .preparingRebalance
        group.stateTimestamp = clock()
        group.rebalanceRound += 1
        let round = group.rebalanceRound
        let timeout = Int64(group.members.values.map(\.rebalanceTimeoutMs).max() ?? 0)
        let delay = wasEmpty ? Swift.min(settings.initialRebalanceDelayMs, Swift.max(timeout, 0)) : timeout
        let groupID = group.id
        Task { [weak self] in
            try? await Task.sleep(for: .milliseconds(Swift.max(delay, 0)))
            await self?.rebalanceTimerFired(groupID, round: round, initialDelay: wasEmpty)
        }
        if !wasEmpty { maybeCompleteJoin(group) }
    }

    func rebalanceTimerFired(_ groupID: String, round: Int, initialDelay: Bool) {
        guard let group = groups[groupID], group.state == .preparingRebalance, group.rebalanceRound == round else { return }
        if initialDelay && group.members.values.contains(where: { $0.joinWaiter == nil }) {
            // The initial delay passed but someone is still on its way: wait for the rebalance timeout.
            group.rebalanceRound += 1
            let next = group.rebalanceRound
            let timeout = Int64(group.members.values.map(\.rebalanceTimeoutMs).max() ?? 0)
            Task { [weak self] in
                try? await Task.sleep(for: .milliseconds(timeout))
                await self?.rebalanceTimerFired(groupID, round: next, initialDelay: false)
            }
            return
        }
        // Members that did not rejoin in time are removed.
        for id in group.joinOrder where group.members[id]?.joinWaiter == nil {
            logger.info("member did not rejoin in time", metadata: ["group": "\(groupID)", "member": "\(id)"])
            removeMember(group, id)
        }
        completeJoin(group)
    }

    func maybeCompleteJoin(_ group: Group) {
        guard group.state == .preparingRebalance, group.members.values.allSatisfy({ $0.joinWaiter != nil }) else { return }
        // An empty group still waits out group.initial.rebalance.delay.ms (the timer completes it).
        if group.generation == 0 && settings.initialRebalanceDelayMs > 0 && clock() - group.stateTimestamp < settings.initialRebalanceDelayMs {
            return
        }
        completeJoin(group)
    }

    func completeJoin(_ group: Group) {
        group.rebalanceRound += 1
        completedRebalances += 1
        group.generation = group.generation == Int32.max ? 1 : group.generation + 1  // a replayed record could hold Int32.max
        group.stateTimestamp = clock()
        if group.members.isEmpty {
            group.state = .empty
            group.protocolName = nil
            group.leader = nil
            persistGroup(group)
            return
        }
        // The protocol every member supports, preferring the members' first choices.
        var candidates: Set<String>? = nil
        for member in group.members.values {
            let names = Set(member.protocols.map(\.name))
            candidates = candidates.map { $0.intersection(names) } ?? names
        }
        var votes: [String: Int] = [:]
        for member in group.members.values {
            if let choice = member.protocols.first(where: { candidates?.contains($0.name) == true }) {
                votes[choice.name, default: 0] += 1
            }
        }
        group.protocolName = votes.max { $0.value != $1.value ? $0.value < $1.value : $0.key > $1.key }?.key
        if group.leader == nil || group.members[group.leader!] == nil { group.leader = group.joinOrder.first }
        group.state = .completingRebalance
        let now = clock()
        for id in group.joinOrder {
            guard var member = group.members[id], let waiter = member.joinWaiter else { continue }
            member.joinWaiter = nil
            member.lastHeartbeatMs = now
            group.members[id] = member
            waiter.resume(returning: joinResponse(group, for: id))
        }
        logger.info("group rebalanced", metadata: [
            "group": "\(group.id)", "generation": "\(group.generation)", "members": "\(group.members.count)",
            "protocol": "\(group.protocolName ?? "-")",
        ])
    }

    func joinResponse(_ group: Group, for id: String) -> JoinGroupResponse {
        var response = JoinGroupResponse()
        response.generationId = group.generation
        response.protocolType = group.protocolType
        response.protocolName = group.protocolName
        response.leader = group.leader ?? ""
        response.memberId = id
        if id == group.leader {
            for memberID in group.joinOrder {
                guard let member = group.members[memberID] else { continue }
                var entry = JoinGroupResponse.JoinGroupResponseMember()
                entry.memberId = memberID
                entry.groupInstanceId = member.instanceID
                entry.metadata = member.metadata(for: group.protocolName)
                response.members.append(entry)
            }
        }
        return response
    }

    func joinError(_ error: KafkaError, memberID: String = "") -> JoinGroupResponse {
        var response = JoinGroupResponse()
        response.errorCode = error.code
        response.generationId = -1
        response.memberId = memberID
        return response
    }

    // MARK: JoinGroup

    func join(_ request: JoinGroupRequest, version: Int16, clientID: String, clientHost: String) async -> JoinGroupResponse {
        guard !request.groupId.isEmpty else { return joinError(.invalidGroupId) }
        guard request.sessionTimeoutMs >= settings.minSessionTimeoutMs, request.sessionTimeoutMs <= settings.maxSessionTimeoutMs else {
            return joinError(.invalidSessionTimeout, memberID: request.memberId)
        }
        guard !request.protocols.isEmpty, !request.protocolType.isEmpty else {
            return joinError(.inconsistentGroupProtocol, memberID: request.memberId)
        }
        if let consumer = consumerGroups[request.groupId], !consumer.members.isEmpty {
            return joinError(.inconsistentGroupProtocol, memberID: request.memberId)
        }
        removeEmptyConsumerGroup(request.groupId)  // a classic group takes the id over
        let group = groups[request.groupId] ?? Group(id: request.groupId)
        groups[request.groupId] = group
        if group.state != .empty, let type = group.protocolType, type != request.protocolType {
            return joinError(.inconsistentGroupProtocol, memberID: request.memberId)
        }
        if group.state != .empty, !group.members.isEmpty {
            let supported = group.members.values.map { Set($0.protocols.map(\.name)) }.reduce(Set(request.protocols.map(\.name))) { $0.intersection($1) }
            if supported.isEmpty { return joinError(.inconsistentGroupProtocol, memberID: request.memberId) }
        }
        let rebalanceTimeout = version >= 1 ? request.rebalanceTimeoutMs : request.sessionTimeoutMs
        let protocols = request.protocols.map { ($0.name, $0.metadata) }
        let now = clock()
        var memberID = request.memberId

        if memberID.isEmpty {
            if let instance = request.groupInstanceId {
                let newID = "\(instance)-\(UUID().uuidString.lowercased())"
                if let oldID = group.staticMembers[instance], var old = group.members[oldID] {
                    // A static member restarted: it takes over its old identity under a new member id.
                    group.members[oldID] = nil
                    if let index = group.joinOrder.firstIndex(of: oldID) { group.joinOrder[index] = newID }
                    if let waiter = old.joinWaiter {
                        old.joinWaiter = nil
                        waiter.resume(returning: joinError(.fencedInstanceId, memberID: oldID))
                    }
                    let unchanged = old.protocols.map(\.name) == protocols.map(\.0)
                        && zip(old.protocols, protocols).allSatisfy { $0.metadata == $1.1 }
                    old.memberID = newID
                    old.protocols = protocols
                    old.clientID = clientID
                    old.clientHost = clientHost
                    old.sessionTimeoutMs = request.sessionTimeoutMs
                    old.rebalanceTimeoutMs = rebalanceTimeout
                    old.lastHeartbeatMs = now
                    group.members[newID] = old
                    group.staticMembers[instance] = newID
                    if group.leader == oldID { group.leader = newID }
                    if group.state == .stable && unchanged {
                        // KIP-345: no rebalance; it syncs to get its old assignment back.
                        persistGroup(group)
                        var response = joinResponse(group, for: newID)
                        if group.leader == newID {
                            response.skipAssignment = version >= 9
                            if version < 9 { response.members = [] }
                        }
                        return response
                    }
                    memberID = newID
                } else {
                    guard group.members.count + group.pendingMembers.count < settings.maxGroupSize else {
                        return joinError(.groupMaxSizeReached)
                    }
                    memberID = newID
                    addMember(group, id: memberID, request: request, protocols: protocols, rebalanceTimeout: rebalanceTimeout,
                              clientID: clientID, clientHost: clientHost, now: now)
                }
            } else if version >= 4 {
                guard group.members.count + group.pendingMembers.count < settings.maxGroupSize else {
                    return joinError(.groupMaxSizeReached)
                }
                let newID = "\(clientID)-\(UUID().uuidString.lowercased())"
                // A pending id that is never used expires after the session timeout.
                group.pendingMembers[newID] = now + Int64(request.sessionTimeoutMs)
                return joinError(.memberIdRequired, memberID: newID)
            } else {
                guard group.members.count + group.pendingMembers.count < settings.maxGroupSize else {
                    return joinError(.groupMaxSizeReached)
                }
                memberID = "\(clientID)-\(UUID().uuidString.lowercased())"
                addMember(group, id: memberID, request: request, protocols: protocols, rebalanceTimeout: rebalanceTimeout,
                          clientID: clientID, clientHost: clientHost, now: now)
            }
        } else if group.pendingMembers.removeValue(forKey: memberID) != nil {
            addMember(group, id: memberID, request: request, protocols: protocols, rebalanceTimeout: rebalanceTimeout,
                      clientID: clientID, clientHost: clientHost, now: now)
        } else if var member = group.members[memberID] {
            if let instance = request.groupInstanceId, group.staticMembers[instance] != memberID {
                return joinError(.fencedInstanceId, memberID: memberID)
            }
            let changed = member.protocols.map(\.name) != protocols.map(\.0)
                || !zip(member.protocols, protocols).allSatisfy { $0.metadata == $1.1 }
            member.protocols = protocols
            member.sessionTimeoutMs = request.sessionTimeoutMs
            member.rebalanceTimeoutMs = rebalanceTimeout
            member.lastHeartbeatMs = now
            group.members[memberID] = member
            if (group.state == .stable || group.state == .completingRebalance) && !changed && group.leader != memberID {
                return joinResponse(group, for: memberID)
            }
        } else {
            return joinError(.unknownMemberId, memberID: memberID)
        }

        if group.state != .preparingRebalance {
            prepareRebalance(group)
        }
        let id = memberID
        let groupID = group.id
        // If the client goes away while waiting, stop waiting; the member then expires with its session.
        return await withTaskCancellationHandler {
            await waitForJoin(group, id: id)
        } onCancel: {
            Task { await self.abandonWaits(groupID: groupID, memberID: id) }
        }
    }

    func waitForJoin(_ group: Group, id: String) async -> JoinGroupResponse {
        await withCheckedContinuation { (continuation: CheckedContinuation<JoinGroupResponse, Never>) in
            if let previous = group.members[id]?.joinWaiter {
                previous.resume(returning: joinError(.rebalanceInProgress, memberID: id))
            }
            group.members[id]?.joinWaiter = continuation
            if group.members[id] == nil {
                continuation.resume(returning: joinError(.unknownMemberId, memberID: id))
                return
            }
            maybeCompleteJoin(group)
        }
    }

    /// A waiting member's connection closed: answer its pending JoinGroup/SyncGroup with an error
    /// (nobody reads it) so session expiry can remove the member.
    func abandonWaits(groupID: String, memberID: String) {
        guard let group = groups[groupID], var member = group.members[memberID] else { return }
        if let waiter = member.joinWaiter {
            member.joinWaiter = nil
            waiter.resume(returning: joinError(.rebalanceInProgress, memberID: memberID))
        }
        if let waiter = member.syncWaiter {
            member.syncWaiter = nil
            var response = SyncGroupResponse()
            response.errorCode = KafkaError.rebalanceInProgress.code
            waiter.resume(returning: response)
        }
        group.members[memberID] = member
    }

    func addMember(_ group: Group, id: String, request: JoinGroupRequest, protocols: [(String, ByteBuffer)],
                           rebalanceTimeout: Int32, clientID: String, clientHost: String, now: Int64) {
        let member = Member(memberID: id, instanceID: request.groupInstanceId, clientID: clientID, clientHost: clientHost,
                            rebalanceTimeoutMs: rebalanceTimeout, sessionTimeoutMs: request.sessionTimeoutMs,
                            protocolType: request.protocolType, protocols: protocols.map { (name: $0.0, metadata: $0.1) },
                            lastHeartbeatMs: now)
        group.members[id] = member
        group.joinOrder.append(id)
        if let instance = request.groupInstanceId { group.staticMembers[instance] = id }
        if group.protocolType == nil || group.state == .empty { group.protocolType = request.protocolType }
    }

    // MARK: SyncGroup

    func sync(_ request: SyncGroupRequest) async -> SyncGroupResponse {
        var error = SyncGroupResponse()
        guard let group = groups[request.groupId], var member = group.members[request.memberId] else {
            error.errorCode = KafkaError.unknownMemberId.code
            return error
        }
        if let instance = request.groupInstanceId, group.staticMembers[instance] != request.memberId {
            error.errorCode = KafkaError.fencedInstanceId.code
            return error
        }
        guard request.generationId == group.generation else {
            error.errorCode = KafkaError.illegalGeneration.code
            return error
        }
        if let type = request.protocolType, type != group.protocolType || (request.protocolName != nil && request.protocolName != group.protocolName) {
            error.errorCode = KafkaError.inconsistentGroupProtocol.code
            return error
        }
        member.lastHeartbeatMs = clock()
        group.members[request.memberId] = member
        switch group.state {
        case .empty, .dead:
            error.errorCode = KafkaError.unknownMemberId.code
            return error
        case .preparingRebalance:
            error.errorCode = KafkaError.rebalanceInProgress.code
            return error
        case .stable:
            return syncResponse(group, member: member)
        case .completingRebalance:
            return await withCheckedContinuation { (continuation: CheckedContinuation<SyncGroupResponse, Never>) in
                group.members[request.memberId]?.syncWaiter = continuation
                if request.memberId == group.leader {
                    var assignments: [String: ByteBuffer] = [:]
                    for entry in request.assignments { assignments[entry.memberId] = entry.assignment }
                    for id in group.joinOrder { group.members[id]?.assignment = assignments[id] ?? ByteBuffer() }
                    group.state = .stable
                    group.stateTimestamp = clock()
                    persistGroup(group)
                    for id in group.joinOrder {
                        guard let waiting = group.members[id], let waiter = waiting.syncWaiter else { continue }
                        group.members[id]?.syncWaiter = nil
                        waiter.resume(returning: syncResponse(group, member: waiting))
                    }
                }
            }
        }
    }

    func syncResponse(_ group: Group, member: Member) -> SyncGroupResponse {
        var response = SyncGroupResponse()
        response.protocolType = group.protocolType
        response.protocolName = group.protocolName
        response.assignment = member.assignment
        return response
    }

    // MARK: Heartbeat and LeaveGroup

    func heartbeat(_ request: HeartbeatRequest) -> KafkaError {
        guard let group = groups[request.groupId], var member = group.members[request.memberId] else { return .unknownMemberId }
        if let instance = request.groupInstanceId, group.staticMembers[instance] != request.memberId { return .fencedInstanceId }
        guard request.generationId == group.generation else { return .illegalGeneration }
        member.lastHeartbeatMs = clock()
        group.members[request.memberId] = member
        switch group.state {
        case .preparingRebalance: return .rebalanceInProgress
        case .empty, .dead: return .unknownMemberId
        case .stable, .completingRebalance: return .noError
        }
    }

    func leave(groupID: String, members: [(memberID: String, instanceID: String?)]) -> (KafkaError, [KafkaError]) {
        guard let group = groups[groupID] else { return (.unknownMemberId, members.map { _ in .unknownMemberId }) }
        var results: [KafkaError] = []
        for entry in members {
            var id = entry.memberID
            if let instance = entry.instanceID {
                guard let known = group.staticMembers[instance] else { results.append(.unknownMemberId); continue }
                if !id.isEmpty && id != known { results.append(.fencedInstanceId); continue }
                id = known
            }
            if group.pendingMembers.removeValue(forKey: id) != nil { results.append(.noError); continue }
            guard group.members[id] != nil else { results.append(.unknownMemberId); continue }
            logger.info("member left", metadata: ["group": "\(groupID)", "member": "\(id)"])
            removeMember(group, id)
            results.append(.noError)
        }
        membersChanged(group)
        return (.noError, results)
    }
}
