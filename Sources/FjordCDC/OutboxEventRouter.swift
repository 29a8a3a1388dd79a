public import FjordPostgresReplication
public import Logging

/// Debezium's outbox event router: a row inserted into an outbox table (`id`, `aggregatetype`,
/// `aggregateid`, `type`, `payload`) becomes one event on `outbox.event.<aggregatetype>`,
/// keyed by `aggregateid`, with `payload` as its value (a NULL payload: a tombstone) and the
/// event's `id` and `type` as headers. Updates are not events (logged once); deletes are
/// ignored, so the application may delete the row in the inserting transaction.
public struct OutboxEventRouter: Sendable {
    public var topicPrefix: String

    public init(topicPrefix: String = "outbox.event.") {
        self.topicPrefix = topicPrefix
    }

    public func records(for message: PgOutputMessage, relation: PgRelation, lsn: LSN, logger: Logger) -> [ChangeRecord] {
        switch message {
        case .insert(_, let row):
            func column(_ name: String) -> String? {
                guard let index = relation.columns.firstIndex(where: { $0.name == name }), index < row.count,
                    case .text(let text) = row[index] else { return nil }
                return text
            }
            guard let aggregateType = column("aggregatetype"), !aggregateType.isEmpty else {
                logger.error("an outbox row without aggregatetype was skipped",
                             metadata: ["table": "\(relation.namespace).\(relation.name)", "lsn": "\(lsn)"])
                return []
            }
            var headers: [ChangeRecord.Header] = []
            if let id = column("id") { headers.append(.init(key: "id", value: id)) }
            if let type = column("type") { headers.append(.init(key: "type", value: type)) }
            return [ChangeRecord(topic: topicPrefix + aggregateType, key: column("aggregateid"), value: column("payload"), lsn: lsn,
                                 headers: headers)]
        case .update:
            logger.warning("an outbox row was updated: only inserts are events",
                           metadata: ["table": "\(relation.namespace).\(relation.name)", "lsn": "\(lsn)"])
            return []
        default:
            return []
        }
    }
}
