"""Hand-written general facts for the regression suite's multiple-choice category.

Each table is (question, answer) pairs of one kind; the wrong choices of an item are other answers
of the same table, so every choice is a plausible answer to the question's form and only knowledge
separates them. Written for this project from common knowledge; nothing is downloaded. None of these
questions is one of the replay prompts (tunesmith.data.replay), which training may see.
"""

from __future__ import annotations

CAPITALS = [
    ("Peru", "Lima"), ("Japan", "Tokyo"), ("Germany", "Berlin"), ("Spain", "Madrid"), ("Egypt", "Cairo"),
    ("Kenya", "Nairobi"), ("Norway", "Oslo"), ("Greece", "Athens"), ("Portugal", "Lisbon"), ("Russia", "Moscow"),
    ("Poland", "Warsaw"), ("Sweden", "Stockholm"), ("Ireland", "Dublin"), ("Austria", "Vienna"),
    ("Thailand", "Bangkok"), ("Argentina", "Buenos Aires"), ("Chile", "Santiago"), ("Cuba", "Havana"),
    ("Denmark", "Copenhagen"), ("Finland", "Helsinki"), ("Hungary", "Budapest"), ("Turkey", "Ankara"),
    ("Australia", "Canberra"), ("India", "New Delhi"), ("China", "Beijing"), ("South Korea", "Seoul"),
    ("Belgium", "Brussels"), ("the United Kingdom", "London"), ("Mexico", "Mexico City"), ("Iran", "Tehran"),
]
CAPITAL_Q = "What is the capital city of {}?"

SYMBOLS = [
    ("gold", "Au"), ("silver", "Ag"), ("oxygen", "O"), ("hydrogen", "H"), ("sodium", "Na"), ("carbon", "C"),
    ("helium", "He"), ("copper", "Cu"), ("lead", "Pb"), ("nitrogen", "N"), ("calcium", "Ca"), ("potassium", "K"),
]
SYMBOL_Q = "What is the chemical symbol for {}?"

YOUNG = [
    ("dog", "puppy"), ("cow", "calf"), ("sheep", "lamb"), ("horse", "foal"), ("frog", "tadpole"),
    ("kangaroo", "joey"), ("deer", "fawn"), ("bear", "cub"), ("duck", "duckling"), ("pig", "piglet"),
    ("goose", "gosling"), ("swan", "cygnet"),
]
YOUNG_Q = "What is a young {} called?"

OPPOSITES = [
    ("hot", "cold"), ("tall", "short"), ("happy", "sad"), ("fast", "slow"), ("heavy", "light"), ("open", "closed"),
    ("full", "empty"), ("wet", "dry"), ("loud", "quiet"), ("rich", "poor"), ("young", "old"), ("clean", "dirty"),
    ("strong", "weak"), ("first", "last"),
]
OPPOSITE_Q = "Which word means the opposite of '{}'?"

PLURALS = [
    ("child", "children"), ("foot", "feet"), ("tooth", "teeth"), ("goose", "geese"), ("man", "men"),
    ("woman", "women"), ("person", "people"), ("leaf", "leaves"), ("knife", "knives"), ("wolf", "wolves"),
    ("box", "boxes"), ("city", "cities"),
]
PLURAL_Q = "What is the plural of the word '{}'?"

LANGUAGES = [
    ("Mexico", "Spanish"), ("Germany", "German"), ("Japan", "Japanese"), ("Egypt", "Arabic"), ("Russia", "Russian"),
    ("Portugal", "Portuguese"), ("China", "Chinese"), ("Greece", "Greek"), ("the Netherlands", "Dutch"),
    ("Sweden", "Swedish"), ("Turkey", "Turkish"), ("Poland", "Polish"),
]
LANGUAGE_Q = "Which language do most people in {} speak?"

CONTINENTS = [
    ("Kenya", "Africa"), ("Brazil", "South America"), ("France", "Europe"), ("Japan", "Asia"),
    ("Canada", "North America"), ("Egypt", "Africa"), ("Argentina", "South America"), ("Germany", "Europe"),
    ("India", "Asia"), ("Mexico", "North America"), ("Nigeria", "Africa"), ("Peru", "South America"),
    ("Italy", "Europe"), ("Thailand", "Asia"), ("Cuba", "North America"), ("Morocco", "Africa"),
    ("Chile", "South America"), ("Norway", "Europe"), ("Vietnam", "Asia"), ("Guatemala", "North America"),
]
CONTINENT_Q = "On which continent is {}?"

COLOURS = [
    ("fresh grass", "green"), ("snow", "white"), ("coal", "black"), ("a ripe tomato", "red"),
    ("a ripe lemon", "yellow"), ("milk", "white"), ("a crow", "black"), ("a clear daytime sky", "blue"),
    ("a ripe aubergine", "purple"), ("a flamingo", "pink"), ("chocolate", "brown"), ("a pumpkin", "orange"),
    ("a fire engine in Britain", "red"), ("a polar bear's fur", "white"), ("the sea on a sunny day", "blue"),
    ("a lime", "green"),
]
COLOUR_Q = "What colour is {}?"

# questions whose answers are numbers: the wrong choices are nearby numbers, not other rows' answers
COUNTS = [
    ("How many legs does a spider have?", 8), ("How many legs does an insect have?", 6),
    ("How many days are in a week?", 7), ("How many months are in a year?", 12),
    ("How many hours are in a day?", 24), ("How many minutes are in an hour?", 60),
    ("How many sides does a triangle have?", 3), ("How many sides does a pentagon have?", 5),
    ("How many sides does an octagon have?", 8), ("How many days are in a leap year?", 366),
    ("How many players are on the field for one soccer team?", 11), ("How many planets orbit the Sun?", 8),
    ("How many wheels does a tricycle have?", 3), ("How many strings does a standard guitar have?", 6),
]

SCIENCE = [
    ("Which planet is closest to the Sun?", "Mercury", ["Venus", "Mars", "Saturn"]),
    ("Which is the largest planet in the solar system?", "Jupiter", ["Mercury", "Mars", "Venus"]),
    ("Which gas do humans need to breathe in to live?", "Oxygen", ["Helium", "Neon", "Argon"]),
    ("What is frozen water called?", "Ice", ["Steam", "Sand", "Salt"]),
    ("What star is at the centre of our solar system?", "The Sun", ["The Moon", "Mars", "Polaris"]),
    ("Which animal is the largest mammal on Earth?", "The blue whale", ["The mouse", "The cat", "The rabbit"]),
    ("Which organ pumps blood around the body?", "The heart", ["The lung", "The liver", "The skin"]),
    ("What do bees collect from flowers to make honey?", "Nectar", ["Sand", "Bark", "Stones"]),
    ("Which season comes after winter?", "Spring", ["Autumn", "Summer", "Night"]),
    ("What is the main colour of a ripe banana?", "Yellow", ["Blue", "Purple", "Black"]),
    ("Which animal is known for having a very long neck?", "The giraffe", ["The pig", "The frog", "The crab"]),
    ("What do caterpillars turn into?", "Butterflies", ["Fish", "Birds", "Snakes"]),
]
