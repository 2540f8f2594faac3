//! The household vocabulary: receptacle and object kinds, where objects may
//! lie, which object kinds each task type can use, and the four room layouts.
//!
//! Everything here is static data; the generator (`world.rs`) draws from it.

/// A receptacle kind: something objects lie on or in, and a place to go to.
#[derive(Debug, Clone, Copy)]
pub struct RecepKind {
    /// The name as ALFWorld writes it ("countertop", "sinkbasin").
    pub name: &'static str,
    /// Has a door or lid that can be opened and closed.
    pub openable: bool,
    /// Colour of its drawing in the image.
    pub color: [u8; 3],
}

/// An object kind.
#[derive(Debug, Clone, Copy)]
pub struct ObjKind {
    /// The name as ALFWorld writes it ("apple", "creditcard").
    pub name: &'static str,
    /// Receptacle kinds it may lie in or on (indices into [`RECEPS`]).
    pub places: &'static [u8],
    /// Can be heated with a microwave for a heat task.
    pub heatable: bool,
    /// Can be cooled with a fridge for a cool task.
    pub coolable: bool,
    /// Can be cleaned with a sinkbasin for a clean task.
    pub cleanable: bool,
    /// Used as the object of an "examine in light" task.
    pub examinable: bool,
    /// A lamp: cannot be picked up, can be used (turned on and off).
    pub lamp: bool,
    /// Colour of its icon in the image.
    pub color: [u8; 3],
}

// Receptacle kind indices (positions in RECEPS).
pub const ARMCHAIR: u8 = 0;
pub const BATHTUBBASIN: u8 = 1;
pub const BED: u8 = 2;
pub const CABINET: u8 = 3;
pub const COFFEEMACHINE: u8 = 4;
pub const COFFEETABLE: u8 = 5;
pub const COUNTERTOP: u8 = 6;
pub const DESK: u8 = 7;
pub const DININGTABLE: u8 = 8;
pub const DRAWER: u8 = 9;
pub const DRESSER: u8 = 10;
pub const FRIDGE: u8 = 11;
pub const GARBAGECAN: u8 = 12;
pub const HANDTOWELHOLDER: u8 = 13;
pub const LAUNDRYHAMPER: u8 = 14;
pub const MICROWAVE: u8 = 15;
pub const SAFE: u8 = 16;
pub const SHELF: u8 = 17;
pub const SIDETABLE: u8 = 18;
pub const SINKBASIN: u8 = 19;
pub const SOFA: u8 = 20;
pub const STOVEBURNER: u8 = 21;
pub const TOASTER: u8 = 22;
pub const TOILET: u8 = 23;
pub const TOWELHOLDER: u8 = 24;
pub const TVSTAND: u8 = 25;

const fn r(name: &'static str, openable: bool, color: [u8; 3]) -> RecepKind {
    RecepKind {
        name,
        openable,
        color,
    }
}

/// All receptacle kinds, indexed by the constants above.
pub static RECEPS: [RecepKind; 26] = [
    r("armchair", false, [150, 90, 70]),
    r("bathtubbasin", false, [200, 220, 235]),
    r("bed", false, [120, 140, 200]),
    r("cabinet", true, [170, 120, 70]),
    r("coffeemachine", false, [70, 70, 70]),
    r("coffeetable", false, [160, 110, 60]),
    r("countertop", false, [190, 190, 180]),
    r("desk", false, [150, 100, 55]),
    r("diningtable", false, [140, 95, 50]),
    r("drawer", true, [180, 130, 80]),
    r("dresser", false, [130, 85, 60]),
    r("fridge", true, [210, 225, 235]),
    r("garbagecan", false, [90, 110, 90]),
    r("handtowelholder", false, [170, 170, 170]),
    r("laundryhamper", false, [200, 180, 140]),
    r("microwave", true, [60, 60, 70]),
    r("safe", true, [100, 100, 110]),
    r("shelf", false, [175, 140, 100]),
    r("sidetable", false, [165, 115, 70]),
    r("sinkbasin", false, [185, 210, 225]),
    r("sofa", false, [110, 120, 160]),
    r("stoveburner", false, [50, 50, 50]),
    r("toaster", false, [200, 200, 210]),
    r("toilet", false, [235, 235, 235]),
    r("towelholder", false, [160, 160, 160]),
    r("tvstand", false, [90, 70, 50]),
];

// Place lists (receptacle kinds an object may lie in or on).
const FOOD: &[u8] = &[
    COUNTERTOP,
    DININGTABLE,
    FRIDGE,
    MICROWAVE,
    GARBAGECAN,
    SINKBASIN,
    CABINET,
];
const DISH: &[u8] = &[
    COUNTERTOP,
    DININGTABLE,
    CABINET,
    SHELF,
    SINKBASIN,
    MICROWAVE,
    FRIDGE,
];
const PAN: &[u8] = &[
    STOVEBURNER,
    COUNTERTOP,
    CABINET,
    DININGTABLE,
    FRIDGE,
    SINKBASIN,
];
const CUTLERY: &[u8] = &[COUNTERTOP, DININGTABLE, DRAWER, SINKBASIN];
const KITCHEN_MISC: &[u8] = &[COUNTERTOP, DININGTABLE, CABINET, SHELF, DRAWER];
const SMALL: &[u8] = &[
    DESK,
    SIDETABLE,
    DRESSER,
    DRAWER,
    SHELF,
    COFFEETABLE,
    DININGTABLE,
    SAFE,
];
const SOFT: &[u8] = &[BED, SOFA, ARMCHAIR];
const DECOR: &[u8] = &[SHELF, SIDETABLE, COFFEETABLE, DRESSER, TVSTAND, DESK];
const BATH: &[u8] = &[
    COUNTERTOP,
    CABINET,
    SHELF,
    TOILET,
    BATHTUBBASIN,
    SINKBASIN,
    DRAWER,
];
const TOWELS: &[u8] = &[
    TOWELHOLDER,
    HANDTOWELHOLDER,
    COUNTERTOP,
    CABINET,
    BATHTUBBASIN,
    LAUNDRYHAMPER,
];
const LAMP: &[u8] = &[DESK, SIDETABLE, DRESSER];

#[allow(clippy::too_many_arguments)]
const fn o(
    name: &'static str,
    places: &'static [u8],
    heat: bool,
    cool: bool,
    clean: bool,
    examine: bool,
    color: [u8; 3],
) -> ObjKind {
    ObjKind {
        name,
        places,
        heatable: heat,
        coolable: cool,
        cleanable: clean,
        examinable: examine,
        lamp: false,
        color,
    }
}

/// All object kinds.
pub static OBJECTS: [ObjKind; 40] = [
    //  name            places        heat   cool   clean  examine colour
    o("apple", FOOD, true, true, true, false, [200, 30, 40]),
    o("bread", FOOD, true, true, false, false, [205, 150, 80]),
    o("egg", FOOD, true, true, true, false, [245, 235, 210]),
    o("lettuce", FOOD, false, true, true, false, [90, 190, 70]),
    o("potato", FOOD, true, true, true, false, [170, 130, 80]),
    o("tomato", FOOD, true, true, true, false, [230, 60, 40]),
    o("mug", DISH, true, true, true, true, [240, 240, 250]),
    o("cup", DISH, true, true, true, false, [120, 180, 230]),
    o("plate", DISH, true, true, true, false, [230, 230, 230]),
    o("bowl", DISH, false, true, true, true, [240, 200, 120]),
    o("pan", PAN, false, true, true, false, [60, 60, 60]),
    o("pot", PAN, false, true, true, false, [110, 110, 120]),
    o("knife", CUTLERY, false, false, true, false, [200, 200, 210]),
    o(
        "butterknife",
        CUTLERY,
        false,
        false,
        true,
        false,
        [210, 210, 190],
    ),
    o("fork", CUTLERY, false, false, true, false, [180, 180, 190]),
    o("spoon", CUTLERY, false, false, true, false, [190, 190, 200]),
    o("spatula", CUTLERY, false, false, true, false, [40, 40, 40]),
    o("ladle", CUTLERY, false, false, true, false, [150, 150, 160]),
    o(
        "dishsponge",
        KITCHEN_MISC,
        false,
        false,
        true,
        false,
        [250, 220, 60],
    ),
    o(
        "saltshaker",
        KITCHEN_MISC,
        false,
        false,
        false,
        false,
        [250, 250, 250],
    ),
    o(
        "peppershaker",
        KITCHEN_MISC,
        false,
        false,
        false,
        false,
        [30, 30, 30],
    ),
    o(
        "winebottle",
        KITCHEN_MISC,
        false,
        true,
        false,
        false,
        [100, 20, 50],
    ),
    o("book", SMALL, false, false, false, true, [60, 90, 170]),
    o("cellphone", SMALL, false, false, false, true, [30, 30, 40]),
    o("pen", SMALL, false, false, false, true, [20, 60, 200]),
    o("pencil", SMALL, false, false, false, true, [240, 190, 30]),
    o("keychain", SMALL, false, false, false, true, [210, 180, 50]),
    o(
        "creditcard",
        SMALL,
        false,
        false,
        false,
        true,
        [40, 140, 90],
    ),
    o("cd", SMALL, false, false, false, true, [200, 200, 230]),
    o(
        "alarmclock",
        SMALL,
        false,
        false,
        false,
        true,
        [220, 60, 60],
    ),
    o("pillow", SOFT, false, false, false, true, [240, 240, 255]),
    o("laptop", SOFT, false, false, false, true, [90, 90, 100]),
    o(
        "remotecontrol",
        DECOR,
        false,
        false,
        false,
        true,
        [40, 40, 50],
    ),
    o("statue", DECOR, false, false, false, true, [180, 170, 150]),
    o("vase", DECOR, false, false, false, true, [70, 150, 160]),
    o("soapbar", BATH, false, false, true, false, [250, 200, 220]),
    o(
        "soapbottle",
        BATH,
        false,
        false,
        false,
        false,
        [120, 200, 200],
    ),
    o(
        "spraybottle",
        BATH,
        false,
        false,
        false,
        false,
        [60, 160, 230],
    ),
    o("cloth", TOWELS, false, false, true, false, [230, 120, 160]),
    ObjKind {
        name: "desklamp",
        places: LAMP,
        heatable: false,
        coolable: false,
        cleanable: false,
        examinable: false,
        lamp: true,
        color: [250, 230, 120],
    },
];

/// Index of the desk lamp in [`OBJECTS`].
pub const DESKLAMP: u8 = 39;

/// The four room layouts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Room {
    Kitchen,
    LivingRoom,
    Bedroom,
    Bathroom,
}

/// A room layout: receptacle kinds with their count range, and the object
/// kinds that appear in it.
pub struct RoomSpec {
    pub receps: &'static [(u8, u8, u8)],
    pub objects: &'static [&'static str],
}

static KITCHEN: RoomSpec = RoomSpec {
    receps: &[
        (CABINET, 3, 8),
        (COFFEEMACHINE, 1, 1),
        (COUNTERTOP, 1, 3),
        (DININGTABLE, 1, 2),
        (DRAWER, 2, 5),
        (FRIDGE, 1, 1),
        (GARBAGECAN, 1, 1),
        (MICROWAVE, 1, 1),
        (SHELF, 0, 2),
        (SINKBASIN, 1, 1),
        (STOVEBURNER, 2, 4),
        (TOASTER, 1, 1),
    ],
    objects: &[
        "apple",
        "bread",
        "egg",
        "lettuce",
        "potato",
        "tomato",
        "mug",
        "cup",
        "plate",
        "bowl",
        "pan",
        "pot",
        "knife",
        "butterknife",
        "fork",
        "spoon",
        "spatula",
        "ladle",
        "dishsponge",
        "saltshaker",
        "peppershaker",
        "winebottle",
    ],
};

static LIVING_ROOM: RoomSpec = RoomSpec {
    receps: &[
        (ARMCHAIR, 1, 2),
        (CABINET, 1, 4),
        (COFFEETABLE, 1, 2),
        (DRAWER, 1, 4),
        (DRESSER, 0, 1),
        (GARBAGECAN, 1, 1),
        (SAFE, 0, 1),
        (SHELF, 1, 4),
        (SIDETABLE, 1, 2),
        (SOFA, 1, 1),
        (TVSTAND, 1, 1),
    ],
    objects: &[
        "book",
        "cellphone",
        "creditcard",
        "keychain",
        "pillow",
        "laptop",
        "remotecontrol",
        "statue",
        "vase",
        "bowl",
        "mug",
        "cd",
        "alarmclock",
        "pen",
        "pencil",
    ],
};

static BEDROOM: RoomSpec = RoomSpec {
    receps: &[
        (BED, 1, 1),
        (DESK, 1, 2),
        (DRAWER, 2, 6),
        (DRESSER, 0, 1),
        (GARBAGECAN, 1, 1),
        (LAUNDRYHAMPER, 0, 1),
        (SAFE, 0, 1),
        (SHELF, 1, 4),
        (SIDETABLE, 1, 2),
    ],
    objects: &[
        "alarmclock",
        "book",
        "cd",
        "cellphone",
        "creditcard",
        "keychain",
        "laptop",
        "mug",
        "pen",
        "pencil",
        "pillow",
        "remotecontrol",
        "statue",
        "vase",
        "bowl",
    ],
};

static BATHROOM: RoomSpec = RoomSpec {
    receps: &[
        (BATHTUBBASIN, 0, 1),
        (CABINET, 2, 4),
        (COUNTERTOP, 1, 1),
        (DRAWER, 0, 4),
        (GARBAGECAN, 1, 1),
        (HANDTOWELHOLDER, 0, 1),
        (SHELF, 0, 2),
        (SINKBASIN, 1, 2),
        (TOILET, 1, 1),
        (TOWELHOLDER, 1, 1),
    ],
    objects: &["soapbar", "soapbottle", "spraybottle", "cloth"],
};

impl Room {
    /// The room's layout data.
    pub fn spec(self) -> &'static RoomSpec {
        match self {
            Room::Kitchen => &KITCHEN,
            Room::LivingRoom => &LIVING_ROOM,
            Room::Bedroom => &BEDROOM,
            Room::Bathroom => &BATHROOM,
        }
    }
}

/// Index of an object kind by name (None for names not in the catalog).
pub fn obj_index(name: &str) -> Option<u8> {
    OBJECTS.iter().position(|k| k.name == name).map(|i| i as u8)
}

/// Index of a receptacle kind by name.
pub fn recep_index(name: &str) -> Option<u8> {
    RECEPS.iter().position(|k| k.name == name).map(|i| i as u8)
}
