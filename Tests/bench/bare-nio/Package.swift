// swift-tools-version:6.0
// A bare SwiftNIO server speaking the shared bench protocol, to compare Moongate with plain NIO.
// Standalone: not part of Moongate's package or its test run.
import PackageDescription

let package = Package(
    name: "bare-nio",
    dependencies: [
        .package(url: "https://github.com/apple/swift-nio.git", from: "2.101.2"),
    ],
    targets: [
        .executableTarget(
            name: "bare-nio",
            dependencies: [
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "NIOPosix", package: "swift-nio"),
                .product(name: "NIOHTTP1", package: "swift-nio"),
                .product(name: "NIOWebSocket", package: "swift-nio"),
            ],
            swiftSettings: [.enableUpcomingFeature("ExistentialAny")]
        ),
    ]
)
