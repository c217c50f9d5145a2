import NIOCore

/// One value per I/O loop, each confined to its loop: how the host keeps per-loop state (a
/// fan-out's members, the keep-alive wheels) without locks.
final class PerLoop<Value>: Sendable {
    private let boxes: [ObjectIdentifier: NIOLoopBoundBox<Value>]

    init(loops: [any EventLoop], make: (any EventLoop) -> Value) {
        var boxes: [ObjectIdentifier: NIOLoopBoundBox<Value>] = [:]
        for loop in loops {
            boxes[ObjectIdentifier(loop)] = .makeBoxSendingValue(make(loop), eventLoop: loop)
        }
        self.boxes = boxes
    }

    /// The value of `loop`, to read or change there; nil for a loop the host does not serve on.
    func box(on loop: any EventLoop) -> NIOLoopBoundBox<Value>? {
        self.boxes[ObjectIdentifier(loop)]
    }
}
